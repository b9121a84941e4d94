"""The CLI helps a newcomer: every command's help shows an example, a wrong MODULE:APP says
which part is wrong, and ids are printed whole."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from soniq import Soniq
from soniq.cli import cli
from soniq.cli_common import load_app
from tests.support.waiting import running_worker, wait_status

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def keep_root_logging() -> Iterator[None]:
    """The CLI group configures root logging (basicConfig(force=True)); put it back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))
        else:
            yield (*prefix, name)


ALL_COMMANDS = list(command_paths(cli))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=[" ".join(p) or "soniq" for p in ALL_COMMANDS])
def test_every_help_shows_an_example_of_that_command(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.output
    examples = result.output.split("Examples:", 1)[1].splitlines()
    lines = [line.strip() for line in examples if line.strip().startswith("soniq ")]
    assert any(line.startswith(" ".join(("soniq", *path))) for line in lines), result.output


def test_the_main_help_shows_every_command_in_an_example() -> None:
    output = CliRunner().invoke(cli, ["--help"]).output
    for name in cli.commands:
        assert f"  soniq {name} " in output, name


def test_the_worker_help_documents_log_level_and_failure_logs() -> None:
    output = CliRunner().invoke(cli, ["worker", "--help"]).output
    assert "--log-level" in output
    assert "Failed attempts are logged at WARNING" in output


def test_a_bad_log_level_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["worker", "x:app", "--log-level", "LOUD"])
    assert result.exit_code == 2
    assert "'LOUD' is not one of" in result.output


# -- a wrong MODULE:APP ------------------------------------------------------------------------

MODULES = {
    "goodmod.py": """
        from soniq import Soniq

        app = Soniq("postgresql://localhost/x")
        other = Soniq("postgresql://localhost/y")

        def helper():
            pass
    """,
    "brokenmod.py": """
        import soniq_no_such_dependency  # a dependency the user forgot to install

        app = None
    """,
    "syntaxmod.py": """
        app = (
    """,
    "noappmod.py": """
        VALUE = 1
    """,
    "pkg/__init__.py": "",
}


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name, text in MODULES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("goodmod", "brokenmod", "syntaxmod", "noappmod", "pkg"):
        sys.modules.pop(name, None)


def message(path: str) -> str:
    with pytest.raises(click.ClickException) as raised:
        load_app(path)
    return raised.value.format_message()


def test_a_right_path_loads_the_app(modules: Path) -> None:
    assert isinstance(load_app("goodmod:app"), Soniq)


@pytest.mark.parametrize("path", ["nosuchmod:app", "pkg.nosuchmod:app", "nosuchpkg.jobs:app"])
def test_a_missing_module_is_named_as_not_found(modules: Path, path: str) -> None:
    text = message(path)
    module = path.split(":")[0]
    assert text.startswith(f"Invalid value for MODULE:APP: module '{module}' not found")
    assert str(modules) in text and "PYTHONPATH" in text


def test_a_file_path_is_turned_into_a_module_name(modules: Path) -> None:
    assert "give a module name, not a file path: 'goodmod'" in message("goodmod.py:app")


def test_an_import_error_inside_the_module_is_not_taken_for_a_missing_module(
    modules: Path,
) -> None:
    text = message("brokenmod:app")
    assert "not found" not in text
    assert "module 'brokenmod' was found, but importing it raised ModuleNotFoundError" in text
    assert "No module named 'soniq_no_such_dependency'" in text
    assert f"{modules / 'brokenmod.py'}:2" in text


def test_a_syntax_error_in_the_module_names_its_line(modules: Path) -> None:
    text = message("syntaxmod:app")
    assert "module 'syntaxmod' was found, but importing it raised SyntaxError" in text
    assert str(modules / "syntaxmod.py") in text


def test_a_missing_attribute_lists_the_apps_the_module_has(modules: Path) -> None:
    text = message("goodmod:ap")
    assert f"module 'goodmod' ({modules / 'goodmod.py'}) has no attribute 'ap'" in text
    assert "its Soniq apps: goodmod:app, goodmod:other" in text
    assert "defines no soniq.Soniq instance" in message("noappmod:app")


def test_an_attribute_that_is_not_a_soniq_says_what_it_is(modules: Path) -> None:
    text = message("goodmod:helper")
    assert "goodmod:helper is a function, not a soniq.Soniq app" in text
    assert "its Soniq apps: goodmod:app, goodmod:other" in text


def test_a_path_without_a_colon_shows_the_form(modules: Path) -> None:
    assert "should look like 'package.module:app'" in message("goodmod")


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("nosuchmod:app", "module 'nosuchmod' not found"),
        ("brokenmod:app", "was found, but importing it raised ModuleNotFoundError"),
        ("goodmod:ap", "has no attribute 'ap'; its Soniq apps: goodmod:app, goodmod:other"),
        ("goodmod:helper", "goodmod:helper is a function, not a soniq.Soniq app"),
    ],
)
def test_soniq_worker_says_which_part_of_the_path_is_wrong(
    modules: Path, path: str, says: str
) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "soniq", "worker", path],
        cwd=modules,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode in (1, 2), result.stderr
    assert says in " ".join(result.stderr.split())  # click wraps nothing here, but be safe
    assert "Traceback" not in result.stderr


# -- ids are whole ------------------------------------------------------------------------------


async def test_dead_letter_list_prints_whole_ids(app: Soniq, clean_db: str) -> None:
    @app.job(name="doomed", max_retries=0)
    async def doomed() -> None:
        raise ValueError("no")

    ids = [await app.enqueue("doomed") for _ in range(3)]
    async with running_worker(app):
        for job_id in ids:
            await wait_status(app, job_id, "dead_letter")
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["dead-letter", "list", "--database-url", clean_db]
    )
    assert result.exit_code == 0, result.output
    # Made in the same millisecond, they share their first characters; each line leads with
    # the whole id, which `soniq dead-letter retry` takes.
    jobs = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
    assert sorted(line.split()[0] for line in jobs) == sorted(ids)
