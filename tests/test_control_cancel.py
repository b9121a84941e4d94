"""Issue 16, point 3: cancelling running jobs, across processes."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import pytest

from soniq import CancelResult, JobContext, Soniq
from tests.apps.control_app import SCHEMA
from tests.support.procs import start_soniq
from tests.support.waiting import running_worker, wait_status, wait_until


@pytest.fixture
async def runs(db: asyncpg.Connection) -> asyncpg.Connection:
    await db.execute(SCHEMA)
    await db.execute("TRUNCATE control_runs")
    return db


async def test_running_async_job_in_another_process_stops_within_two_seconds(
    clean_db: str, runs: asyncpg.Connection
) -> None:
    from tests.apps.control_app import app as control_app

    producer = Soniq(clean_db)
    producer.registry = control_app.registry
    worker = start_soniq(
        "worker", "tests.apps.control_app:app", "--concurrency", "2", database_url=clean_db
    )
    try:
        job_id = await producer.enqueue("control.sleeper", seconds=60)
        await wait_until(
            lambda: runs.fetchval("SELECT count(*) FROM control_runs WHERE job_id=$1", job_id),
            timeout=20,
            what="the job to start in the worker process",
        )
        asked = time.monotonic()
        assert await producer.cancel_job(job_id) == CancelResult.CANCEL_REQUESTED
        row = await wait_status(producer, job_id, "cancelled", timeout=2.0)
        took = time.monotonic() - asked
        assert took < 2.0
        assert row["finished_at"] is not None and row["attempts"] == 1
        # It never runs again: the worker keeps polling, the row stays cancelled, one run.
        await producer.enqueue("control.sleeper", seconds=0)
        await wait_until(
            lambda: runs.fetchval("SELECT count(*) = 2 FROM control_runs"), what="next job"
        )
        assert await producer.cancel_job(job_id) == CancelResult.ALREADY_FINISHED
        assert (
            await runs.fetchval("SELECT count(*) FROM control_runs WHERE job_id = $1", job_id) == 1
        )
    finally:
        await producer.close()
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert "cancel requested" in out


async def test_plain_def_job_sees_cancel_requested_and_is_recorded_cancelled(
    app: Soniq,
) -> None:
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    @app.job(name="c.crunch")
    def crunch(ctx: JobContext) -> str:
        loop.call_soon_threadsafe(started.set)
        deadline = time.monotonic() + 20
        while not ctx.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        return "stopped early" if ctx.cancel_requested else "ran out"

    job_id = await app.enqueue(crunch)
    async with running_worker(app):
        await asyncio.wait_for(started.wait(), 10)
        assert await app.cancel_job(job_id) == CancelResult.CANCEL_REQUESTED
        row = await wait_status(app, job_id, "cancelled", timeout=2.0)
    assert row["result"] is None and row["finished_at"] is not None


async def test_a_missed_notify_is_caught_at_the_next_beat(
    app: Soniq, db: asyncpg.Connection
) -> None:
    started = asyncio.Event()

    @app.job(name="c.wait")
    async def wait_long() -> None:
        started.set()
        await asyncio.sleep(30)

    job_id = await app.enqueue(wait_long)
    async with running_worker(app):
        await asyncio.wait_for(started.wait(), 10)
        # As if the NOTIFY was lost: only the row says so.
        await db.execute("UPDATE soniq_jobs SET cancel_requested_at = now() WHERE id = $1", job_id)
        await wait_status(app, job_id, "cancelled", timeout=app.settings.lease_seconds)


async def test_cancel_results(app: Soniq) -> None:
    @app.job(name="c.later")
    async def later() -> None: ...

    queued = await app.enqueue(later, scheduled_at=3600)
    assert await app.cancel_job(queued) == CancelResult.CANCELLED
    assert await app.cancel_job(queued) == CancelResult.ALREADY_FINISHED
    assert await app.cancel_job(str(uuid.uuid4())) == CancelResult.NOT_FOUND
    assert not CancelResult.CANCEL_REQUESTED and CancelResult.CANCELLED
    with pytest.raises(ValueError, match="not a job id"):
        await app.cancel_job("nope")
