"""The tests that need a system program, run with those programs hidden from PATH: on a fresh
machine they skip naming the Debian package that brings the program; under CI's
SONIQ_REQUIRE_SYSTEM_PROGRAMS=1 they fail instead, so CI can never skip one unnoticed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.programs import REQUIRE_ENV, require_program

ROOT = Path(__file__).resolve().parent.parent

# Every test that runs a program from a Debian package, and that package.
PROGRAMS = {"prometheus": "prometheus", "promtool": "prometheus", "chromium": "chromium"}
PROGRAM_TESTS = [
    "tests/test_deploy_configs.py::test_promtool_accepts_the_config_and_the_rules",
    "tests/test_deploy_configs.py::test_alert_rules_fire_as_their_unit_tests_say",
    "tests/test_deploy_configs.py::test_alert_unit_tests_can_fail",
    "tests/test_prom_docs.py::test_the_example_alerts_pass_promtool",
    "tests/test_deploy_metrics.py::test_a_real_prometheus_answers_every_dashboard_query",
    "tests/test_deploy_metrics.py::test_a_real_prometheus_loads_the_rules_and_fires_on_the_dead_letter",
    "tests/test_deploy_metrics.py::test_a_real_prometheus_stores_exemplars_that_name_a_trace",
    "tests/test_prom_worker.py::test_worker_process_endpoint_counts_the_jobs_it_ran",
    "tests/test_prom_worker.py::test_prometheus_server_scrapes_a_worker_and_answers_queries",
    "tests/test_dashboard_browser.py::test_the_dashboard_in_a_browser",
]


def _path_without(names: set[str], shadow: Path) -> str:
    """PATH with each folder that holds one of ``names`` replaced by a copy made of symlinks to
    everything else in it: the programs vanish, the rest of the machine stays as it is."""
    folders = []
    for i, folder in enumerate(os.environ.get("PATH", "").split(os.pathsep)):
        entries = set(os.listdir(folder)) if os.path.isdir(folder) else set()
        if not entries & names:
            folders.append(folder)
            continue
        copy = shadow / str(i)
        copy.mkdir()
        for entry in entries - names:
            (copy / entry).symlink_to(Path(folder) / entry)
        folders.append(str(copy))
    return os.pathsep.join(folders)


def _pytest(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    shadow = tmp_path / "shadow"
    shadow.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k != REQUIRE_ENV}
    base["PATH"] = _path_without(set(PROGRAMS), shadow)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider", *PROGRAM_TESTS],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    counts = {
        word: int(n)
        for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", result.stdout)
    }
    return result, counts


def test_the_programs_are_hidden_by_the_shadow_path(tmp_path: Path) -> None:
    hidden = _path_without(set(PROGRAMS), tmp_path)
    for name in PROGRAMS:
        assert shutil.which(name, path=hidden) is None
    # Everything else is still found (the tests run the programs' neighbours, e.g. Python).
    assert shutil.which("sh", path=hidden) is not None


def test_without_the_programs_those_tests_skip_naming_the_package(tmp_path: Path) -> None:
    result, counts = _pytest(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert counts == {"skipped": len(PROGRAM_TESTS)}, result.stdout
    skips = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) >= 3  # one line per distinct reason: promtool, prometheus, chromium
    for line in skips:
        program = re.search(r"'([\w-]+)' is not on PATH", line)
        assert program, line
        package = PROGRAMS[program.group(1)]
        assert f"install the Debian package '{package}' (apt-get install {package}" in line


def test_under_ci_s_variable_those_tests_fail_instead(tmp_path: Path) -> None:
    result, counts = _pytest(tmp_path, **{REQUIRE_ENV: "1"})
    assert result.returncode == 1, result.stdout + result.stderr
    # The prometheus server is looked for in a fixture: pytest counts those as errors.
    assert "skipped" not in counts, result.stdout
    assert counts.get("failed", 0) + counts.get("errors", counts.get("error", 0)) == len(
        PROGRAM_TESTS
    ), result.stdout
    assert f"{REQUIRE_ENV}=1 forbids skipping" in result.stdout
    assert "apt-get install prometheus" in result.stdout


def test_a_present_program_is_returned_by_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    found = require_program(Path(sys.executable).name, "python3")
    assert Path(found).is_file() and os.access(found, os.X_OK)


def test_a_missing_program_skips_or_fails_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "soniq-no-such-program"
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install some-package"):
        require_program(missing, "some-package")
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="forbids skipping"):
        require_program(missing, "some-package")


def test_every_file_that_needs_a_program_is_in_the_hidden_run() -> None:
    # A new test that calls require_program joins PROGRAM_TESTS, so the run above covers it.
    users = {
        f"tests/{path.name}"
        for path in (ROOT / "tests").glob("test_*.py")
        if "require_program(" in path.read_text() and path.name != Path(__file__).name
    }
    assert users == {node.split("::")[0] for node in PROGRAM_TESTS}
