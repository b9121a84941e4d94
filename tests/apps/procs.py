"""Run ``soniq worker`` as real processes, signal them, and read what they logged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import asyncpg

from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
JOBS_APP = "tests.apps.jobs:app"


class WorkerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Fleet:
    """Worker processes for one test; any still running at the end are killed."""

    def __init__(self, database_url: str, folder: Path, **settings: Any) -> None:
        self.database_url = database_url
        self.folder = folder
        self.settings = settings
        self.started: list[WorkerProcess] = []

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for worker in self.started:
            worker.kill()
        if exc is not None:
            # Shown by pytest with the failure: what each worker said.
            for worker in self.started:
                print(f"--- worker {worker.pid} (exit {worker.proc.returncode}) ---")
                print(worker.log())
        for worker in self.started:
            if worker.proc.stdout is not None:
                worker.proc.stdout.close()

    def start(self, *args: str, app: str = JOBS_APP, **settings: Any) -> WorkerProcess:
        env = {**os.environ, "SONIQ_DATABASE_URL": self.database_url, "PYTHONUNBUFFERED": "1"}
        for key, value in {**self.settings, **settings}.items():
            env[f"SONIQ_{key.upper()}"] = str(value)
        log_path = self.folder / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "soniq", "worker", app, *args],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(proc, log_path)
        self.started.append(worker)
        return worker

    async def start_ready(self, *args: str, timeout: float = 30, **settings: Any) -> WorkerProcess:
        """Start a worker and wait until it has registered (its heartbeat row exists)."""
        worker = self.start(*args, **settings)
        await wait_registered(self.database_url, worker, timeout=timeout)
        return worker


async def wait_registered(database_url: str, worker: WorkerProcess, timeout: float = 30) -> None:
    conn = await asyncpg.connect(database_url)
    try:

        async def registered() -> bool:
            if not worker.alive():
                raise AssertionError(f"worker exited early:\n{worker.log()}")
            return bool(
                await conn.fetchval("SELECT count(*) FROM soniq_workers WHERE pid = $1", worker.pid)
            )

        await wait_until(registered, timeout=timeout, interval=0.05, what="worker registration")
    finally:
        await conn.close()


async def wait_exit(worker: WorkerProcess, timeout: float) -> int:
    """The exit code, polled so the test's loop keeps running."""
    code = await wait_until(
        lambda: worker.proc.poll() is not None,
        timeout=timeout,
        interval=0.02,
        what=f"worker {worker.pid} to exit",
    )
    assert code
    rc = worker.proc.returncode
    assert rc is not None
    return rc


async def reset_attempts(conn: asyncpg.Connection[Any]) -> None:
    from tests.apps.jobs import ATTEMPTS_TABLE

    await conn.execute(ATTEMPTS_TABLE)
    await conn.execute("TRUNCATE reliability_attempts")


async def attempts_of(conn: asyncpg.Connection[Any], job_id: str) -> list[asyncpg.Record]:
    """The recorded attempts of one job, oldest first."""
    return await conn.fetch(
        "SELECT attempt, pid, started_at, ended_at FROM reliability_attempts "
        "WHERE job_id = $1 ORDER BY started_at",
        job_id,
    )
