"""Instrumentations are plugins: found through the ``soniq.instrumentations`` entry points, so a
package the core never heard of plugs in with ``app.instrument(<its name>=...)``; the core
imports none of them, they use public API only, and their ``install`` functions agree."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import soniq_otel
import soniq_prom
from soniq import ConfigurationError, Middleware, Soniq
from soniq.instrumentation import ENTRY_POINT_GROUP, available
from soniq.logs import FailureLogMiddleware, LogConfig, LogMiddleware
from soniq.logs import install as install_logs
from soniq_otel import OtelConfig, TracingMiddleware
from soniq_prom import PrometheusConfig, PrometheusMetrics
from tests.support.waiting import running_worker, wait_status

SRC = Path(__file__).resolve().parents[1] / "src"

PLUGIN = "soniq_sentry_probe"

# A third package, as its author would write it: a middleware and an install function.
PLUGIN_SOURCE = """
from soniq import Middleware
from soniq.instrumentation import installed

seen = []


class SentryProbe(Middleware):
    telemetry = True
    order = 40

    def __init__(self, config=None):
        self.config = config or {}

    async def __call__(self, ctx, call_next):
        seen.append(("before", ctx.job_id, self.config.get("tag")))
        try:
            return await call_next(ctx)
        finally:
            seen.append(("after", ctx.job_id, ctx.outcome))


def install(app, config=None):
    if installed(app, SentryProbe) is None:
        app.middleware.add_builtin(SentryProbe(config))
"""


def _install_package(
    root: Path, name: str, source: str, entry_points: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Install ``name`` into ``root`` the way pip lays a wheel out (the module and its
    ``.dist-info`` with METADATA and entry_points.txt) and put ``root`` on sys.path, where
    importlib.metadata finds it like any installed distribution."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(source)
    info = root / f"{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "RECORD").write_text("")
    monkeypatch.syspath_prepend(str(root))


async def test_a_third_package_plugs_in_by_declaring_an_entry_point(
    app: Soniq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="No instrumentation named 'sentry'"):
        app.instrument(sentry=True)  # not installed yet

    _install_package(
        tmp_path,
        PLUGIN,
        PLUGIN_SOURCE,
        f"[{ENTRY_POINT_GROUP}]\nsentry = {PLUGIN}\n",
        monkeypatch,
    )
    try:
        assert available()["sentry"].value == PLUGIN
        app.instrument(sentry={"tag": "from-config"}, logs=LogConfig(attach_context_filter=False))
        app.instrument(sentry=True)  # its own install decides what again means: nothing here
        plugin = sys.modules[PLUGIN]
        assert [type(m).__name__ for m in app.middleware] == [
            "LogMiddleware",
            "FailureLogMiddleware",
            "SentryProbe",
        ]

        @app.job(name="probed")
        async def probed() -> None:
            pass

        async with running_worker(app):
            job_id = await app.enqueue("probed")
            await wait_status(app, job_id, "done")
        assert plugin.seen == [("before", job_id, "from-config"), ("after", job_id, "done")]
    finally:
        sys.modules.pop(PLUGIN, None)


def test_an_unknown_name_lists_what_is_installed_and_how_to_add_one(app: Soniq) -> None:
    with pytest.raises(ConfigurationError) as raised:
        app.instrument(otel=True, sentri=True)
    message = str(raised.value)
    assert "'sentri'" in message
    assert "available: logs, otel, prometheus" in message
    assert f'"{ENTRY_POINT_GROUP}"' in message and "install(app, config=None)" in message
    # Nothing is installed when one name is wrong: the chain has only the layer it started with.
    assert [type(m) for m in app.middleware] == [FailureLogMiddleware]


def test_an_entry_point_without_install_is_refused_by_name(
    app: Soniq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_package(
        tmp_path,
        "soniq_broken_probe",
        "x = 1\n",
        f"[{ENTRY_POINT_GROUP}]\nbroken = soniq_broken_probe\n",
        monkeypatch,
    )
    try:
        with pytest.raises(
            ConfigurationError, match=r"'broken' \(soniq_broken_probe\) has no install"
        ):
            app.instrument(broken=True)
    finally:
        sys.modules.pop("soniq_broken_probe", None)


def test_soniq_declares_its_own_three() -> None:
    found = {name: ep.value for name, ep in available().items()}
    assert {k: found[k] for k in ("otel", "prometheus", "logs")} == {
        "otel": "soniq_otel",
        "prometheus": "soniq_prom",
        "logs": "soniq.logs.plugin",
    }


# -- no imports across the line ----------------------------------------------------------------


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module a file imports (relative imports resolved), at any depth of the file."""
    package = list(path.relative_to(SRC).with_suffix("").parts[:-1])
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield module, node.lineno
            for alias in node.names:
                yield f"{module}.{alias.name}", node.lineno


# The plugins the core must never import: the packages, and within soniq.logs the log layer
# and its install (the ``logs`` entry point); the rest of soniq.logs is plain logging.
PLUGIN_PACKAGES = ("soniq_otel", "soniq_prom", "soniq_dashboard")
LOG_PLUGIN_MODULES = ("soniq.logs.middleware", "soniq.logs.plugin")
_LOG_PLUGIN_FILES = {SRC / "soniq" / "logs" / "middleware.py", SRC / "soniq" / "logs" / "plugin.py"}


def _names_a_plugin(name: str) -> bool:
    return name.split(".")[0] in PLUGIN_PACKAGES or name in LOG_PLUGIN_MODULES


def test_the_core_imports_no_plugin_even_lazily() -> None:
    core = [p for p in (SRC / "soniq").rglob("*.py") if p not in _LOG_PLUGIN_FILES]
    found = [
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for path in core
        for name, line in _imports(path)
        if _names_a_plugin(name)
    ]
    # soniq/logs/__init__.py names the layer only for type checkers and on first use.
    found = [f for f in found if not f.startswith("soniq/logs/__init__.py")]
    assert core and found == []


def test_plugins_use_public_api_only() -> None:
    plugins = [
        *(SRC / "soniq_otel").rglob("*.py"),
        *(SRC / "soniq_prom").rglob("*.py"),
        *(SRC / "soniq" / "logs").rglob("*.py"),
    ]
    found = []
    for path in plugins:
        text = path.read_text()
        if "._store" in text:
            found.append(f"{path.relative_to(SRC)} reaches into the app's store")
        for name, line in _imports(path):
            if name in ("soniq.sql", "soniq.store") or name.startswith(
                ("soniq.sql.", "soniq.store.")
            ):
                found.append(f"{path.relative_to(SRC)}:{line} imports {name}")
        relative = [
            node.module
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.ImportFrom) and node.level == 2
        ]
        found.extend(
            f"{path.relative_to(SRC)} imports ..{m}" for m in relative if m in ("sql", "store")
        )
    assert found == []


def test_importing_and_using_the_core_loads_no_plugin() -> None:
    code = textwrap.dedent("""
        import sys
        import soniq, soniq.cli, soniq.worker
        app = soniq.Soniq("postgresql://nobody@127.0.0.1:1/none")

        @app.job()
        async def j() -> None: ...

        app.worker()
        plugins = ("soniq_otel", "soniq_prom", "soniq_dashboard")
        loaded = sorted(
            m for m in sys.modules
            if m.split(".")[0] in plugins or m in ("soniq.logs.middleware", "soniq.logs.plugin")
        )
        print(loaded)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- the three install functions agree ---------------------------------------------------------

Installer = Callable[..., Middleware]
_PROVIDER = TracerProvider()  # exports nowhere: the worker below needs no collector
CASES: list[tuple[str, Installer, type[Middleware], Any, Any]] = [
    (
        "otel",
        soniq_otel.install,
        TracingMiddleware,
        OtelConfig(tracer_provider=_PROVIDER, max_parent_age=5),
        OtelConfig(tracer_provider=_PROVIDER),
    ),
    (
        "logs",
        install_logs,
        LogMiddleware,
        LogConfig(logger_name="x.jobs", attach_context_filter=False),
        LogConfig(attach_context_filter=False),
    ),
    (
        "prometheus",
        soniq_prom.install,
        PrometheusMetrics,
        PrometheusConfig(max_queues=3),
        PrometheusConfig(),
    ),
]


def test_the_install_functions_share_one_signature() -> None:
    shapes = {
        name: [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]
        for name, fn, *_ in CASES
    }
    assert shapes["otel"] == shapes["logs"] == shapes["prometheus"]
    assert [p[0] for p in shapes["otel"]] == ["app", "config"]
    assert shapes["otel"][1][2] is None


def _front(app: Soniq) -> Middleware:
    return next(iter(app.middleware))


@pytest.mark.parametrize(
    ("name", "install", "kind", "other", "defaults"), CASES, ids=[c[0] for c in CASES]
)
async def test_a_second_install_keeps_or_replaces_by_the_same_rule(
    app: Soniq, name: str, install: Installer, kind: type[Middleware], other: Any, defaults: Any
) -> None:
    class User(Middleware):
        pass

    # The install rule alone (the default failure layer has tests of its own).
    app.middleware.remove(FailureLogMiddleware)
    app.middleware.add(User())
    first = install(app, defaults)
    assert [type(m) for m in app.middleware] == [kind, User], "in front of the user's layers"
    assert install(app) is first, "no config: nothing changes"
    assert install(app, defaults) is first, "an equal config: nothing changes"
    app.instrument(**{name: True})
    assert _front(app) is first

    second = install(app, other)
    assert second is not first and isinstance(second, kind)
    assert _front(app) is second, "replaced in place, in front of the user's layer"
    assert len(app.middleware) == 2
    assert install(app) is second, "no config keeps the replacement"

    with pytest.raises(TypeError, match=f"{name}="):
        install(app, "yes")
    with pytest.raises(TypeError, match="unknown option"):
        install(app, {"no_such_option": 1})

    async with running_worker(app):
        with pytest.raises(RuntimeError, match="running worker"):
            install(app, defaults)
        assert install(app, other) is second, "an equal config is fine while a worker runs"
    assert _front(app) is second
    if isinstance(second, PrometheusMetrics):
        await second.close()


def test_the_cli_names_an_unknown_instrumentation_and_how_to_add_one(clean_db: str) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "soniq",
            "worker",
            "tests.apps.core_app:app",
            "--instrument",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SONIQ_DATABASE_URL": clean_db},
        cwd=SRC.parent,
    )
    assert out.returncode == 2, out.stderr
    assert "--instrument" in out.stderr and "'nope'" in out.stderr
    assert "available: logs, otel, prometheus" in out.stderr
