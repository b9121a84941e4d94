"""Issue 2, points 1, 6-8 through real processes: the CLI, two workers, the demo."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys

import asyncpg
import pytest

from soniq import Soniq
from tests.support.procs import ROOT, env_for, soniq, start_soniq
from tests.support.waiting import wait_until

UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture
async def runs_table(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(
        """CREATE TABLE IF NOT EXISTS test_runs (
               job_id uuid NOT NULL, n int NOT NULL, pid int NOT NULL, worker_id text NOT NULL)"""
    )
    await db.execute("TRUNCATE test_runs")
    return db


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


async def test_two_worker_processes_run_each_job_exactly_once(
    clean_db: str, runs_table: asyncpg.Connection
) -> None:
    from tests.apps.core_app import app as core_app

    producer = Soniq(clean_db)
    producer.registry = core_app.registry
    ids = await producer.enqueue_many("core.record", [{"n": i} for i in range(2000)])
    await producer.close()
    workers = [
        start_soniq(
            "worker", "tests.apps.core_app:app", "--concurrency", "10", database_url=clean_db
        )
        for _ in range(2)
    ]
    try:

        async def drained() -> bool:
            return bool(
                await runs_table.fetchval(
                    "SELECT count(*) = 0 FROM soniq_jobs WHERE status <> 'done'"
                )
            )

        await wait_until(drained, timeout=60, interval=0.2, what="2,000 jobs done")
    finally:
        outputs = [stop(w) for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    rows = await runs_table.fetch(
        "SELECT job_id::text AS id, count(*) AS c, min(pid) AS pid FROM test_runs GROUP BY job_id"
    )
    assert len(rows) == 2000 and {r["id"] for r in rows} == set(ids)
    assert all(r["c"] == 1 for r in rows)
    assert len({r["pid"] for r in rows}) == 2  # both processes took part


async def test_cli_worker_with_queues_and_concurrency(
    clean_db: str, runs_table: asyncpg.Connection
) -> None:
    from tests.apps.core_app import app as core_app

    producer = Soniq(clean_db)
    producer.registry = core_app.registry
    in_a = await producer.enqueue("core.record", queue="a", n=1)
    in_z = await producer.enqueue("core.record", queue="z", n=2)
    proc = start_soniq(
        "worker",
        "tests.apps.core_app:app",
        "--concurrency",
        "3",
        "--queues",
        "a,b",
        database_url=clean_db,
    )
    try:

        async def done() -> bool:
            job = await producer.get_job(in_a)
            return job is not None and job["status"] == "done"

        await wait_until(done, timeout=30, what="job in queue a done")
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert "concurrency 3, queues a,b" in out
    job_z = await producer.get_job(in_z)
    assert job_z is not None and job_z["status"] == "queued"
    await producer.close()


def test_cli_rejects_non_positive_concurrency(clean_db: str) -> None:
    result = soniq("worker", "tests.apps.core_app:app", "--concurrency", "0", database_url=clean_db)
    assert result.returncode == 2
    assert "concurrency" in result.stderr and "positive" in result.stderr


async def test_cli_setup_status_and_dead_letters(empty_database_url: str) -> None:
    url = empty_database_url
    result = soniq("setup", database_url=url)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout

    app = Soniq(url)

    @app.job(name="core.fail", max_retries=0)
    async def fail() -> None:
        raise RuntimeError("always fails")

    @app.job(name="core.later")
    async def later() -> None: ...

    failed = await app.enqueue("core.fail")
    await app.enqueue("core.later", scheduled_at=600)
    await app.enqueue("core.later", queue="other")
    await app.run_worker(queues=["default"], run_once=True, install_signal_handlers=False)

    status = soniq("status", database_url=url)
    assert status.returncode == 0, status.stderr
    lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
    # queue ready scheduled processing done dead_letter cancelled oldest-ready
    assert lines["default"][1:7] == ["0", "1", "0", "0", "1", "0"]
    assert lines["other"][1] == "1" and lines["other"][7].endswith("s")

    listing = soniq("dead-letter", "list", database_url=url)
    assert failed in listing.stdout and "RuntimeError: always fails" in listing.stdout

    retry = soniq("dead-letter", "retry", failed, database_url=url)
    assert retry.returncode == 0 and "Requeued 1 job(s)" in retry.stdout
    job = await app.get_job(failed)
    assert job is not None and (job["status"], job["attempts"]) == ("queued", 0)

    missing = soniq("dead-letter", "retry", failed, database_url=url)
    assert missing.returncode == 1 and "not in the dead-letter queue" in missing.stderr

    await app.run_worker(queues=["default"], run_once=True, install_signal_handlers=False)
    again = soniq("dead-letter", "retry", "--all", database_url=url)
    assert again.returncode == 0 and "Requeued 1 job(s)" in again.stdout
    await app.close()


def test_cli_reports_a_missing_schema_clearly(empty_database_url: str) -> None:
    result = soniq("status", database_url=empty_database_url)
    assert result.returncode == 1
    assert "soniq setup" in result.stderr


async def test_demo_runs_end_to_end(clean_db: str, db: asyncpg.Connection) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "examples/demo.py"],
        cwd=ROOT,
        env=env_for(clean_db),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("after_job   examples") == 0  # job names are the module path
    assert out.count("after_job") == 3
    assert "attempt 1: card declined" in out and "-> will retry" in out
    assert "-> dead-letter queue" in out
    # Ids are whole: time-ordered ids made together share their first characters.
    hooks = [
        line.split()
        for line in out.splitlines()
        if line.lstrip().startswith(("before_job", "after_job", "on_error"))
    ]
    shown = {words[2].strip("()") for words in hooks}
    assert all(UUID7.fullmatch(job_id) for job_id in shown), shown
    stored = {str(r["id"]) for r in await db.fetch("SELECT id FROM soniq_jobs")}
    assert shown == stored and len(stored) == 4
    dead = str(await db.fetchval("SELECT id FROM soniq_jobs WHERE status = 'dead_letter'"))
    assert f"Payment job {dead} is dead_letter after 3 attempts" in out
    assert f"soniq dead-letter retry {dead}" in out
    # The failures show in its log without any instrumentation (logging.basicConfig only).
    assert f"Job __main__.charge_card ({dead}) failed on attempt 1 of 3" in result.stderr
    assert "moved to the dead-letter queue" in result.stderr
