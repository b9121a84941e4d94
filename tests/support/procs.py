"""Start ``soniq`` commands and Python scripts as real processes for the tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def env_for(database_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "SONIQ_DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def soniq(
    *args: str, database_url: str, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soniq", *args],
        cwd=ROOT,
        env=env_for(database_url, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_soniq(*args: str, database_url: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "soniq", *args],
        cwd=ROOT,
        env=env_for(database_url, **extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
