"""Graceful shutdown of real worker processes: SIGTERM/SIGINT, the grace period, a second
signal, and jobs that cannot be interrupted."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from soniq import JobContext, Soniq
from tests.apps.jobs import build
from tests.apps.procs import Fleet, WorkerProcess, attempts_of, reset_attempts, wait_exit
from tests.support.waiting import running_worker, wait_status, wait_until

LEASE = 2.0
GRACE = 3.0  # longer than the lease: the heartbeat must carry on through the grace period


@pytest.fixture
async def producer(clean_db: str, db: asyncpg.Connection[Any]) -> AsyncIterator[Soniq]:
    await reset_attempts(db)
    app = build(clean_db)
    yield app
    await app.close()


async def started(db: asyncpg.Connection[Any], *job_ids: str) -> None:
    async def all_started() -> bool:
        return all([await attempts_of(db, j) for j in job_ids])

    await wait_until(all_started, timeout=20, what="the attempts to start")


async def logged(worker: WorkerProcess, text: str) -> None:
    await wait_until(lambda: text in worker.log(), timeout=20, what=f"{text!r} in the log")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_finishes_running_jobs_and_puts_back_the_rest_without_using_an_attempt(
    sig: signal.Signals,
    producer: Soniq,
    db: asyncpg.Connection[Any],
    clean_db: str,
    tmp_path: Path,
) -> None:
    with Fleet(
        clean_db, tmp_path, lease_seconds=LEASE, grace_period=GRACE, poll_interval=0.2
    ) as fleet:
        worker = await fleet.start_ready("--concurrency", "3")
        # Claims nothing here, but would take the jobs of a worker that stopped beating while
        # its jobs still ran in the grace period (longer than the lease).
        bystander = await fleet.start_ready("--queues", "elsewhere")
        short = await producer.enqueue("sleepy", first=GRACE - 1.5)  # ends within the grace
        long = await producer.enqueue("sleepy_once", first=120, later=0.05)  # max_retries=0
        await started(db, short, long)

        worker.signal(sig)
        await logged(worker, f"{sig.name} received")
        late = await producer.enqueue("sleepy", first=0.05)  # must not be claimed now
        code = await wait_exit(worker, timeout=GRACE + 20)

        assert code == 0, worker.log()
        done = await producer.get_job(short)
        put_back = await producer.get_job(long)
        untouched = await producer.get_job(late)
        assert done is not None and put_back is not None and untouched is not None
        assert (done["status"], done["attempts"]) == ("done", 1)
        assert (put_back["status"], put_back["attempts"]) == ("queued", 0)
        assert put_back["worker_id"] is None and put_back["last_error"] is None
        assert (untouched["status"], untouched["attempts"]) == ("queued", 0)
        assert "putting them back" in worker.log()
        assert "lost its worker" not in bystander.log()

        # The interrupted max_retries=0 job was not dead-lettered: it runs again and succeeds.
        successor = await fleet.start_ready("--concurrency", "3")
        rerun = await wait_status(producer, long, "done", timeout=20)
        await wait_status(producer, late, "done", timeout=20)
        rows = await attempts_of(db, long)

    assert rerun["attempts"] == 1
    assert [r["pid"] for r in rows] == [worker.pid, successor.pid]
    assert rows[0]["ended_at"] is None and rows[1]["ended_at"] is not None


async def test_a_second_signal_exits_at_once_and_the_lease_recovers_the_jobs(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    with Fleet(
        clean_db, tmp_path, lease_seconds=LEASE, grace_period=60, poll_interval=0.2
    ) as fleet:
        worker = await fleet.start_ready("--concurrency", "2")
        job_id = await producer.enqueue("sleepy", first=120, later=0.05)
        await started(db, job_id)

        worker.signal(signal.SIGTERM)
        await logged(worker, "SIGTERM received")
        worker.signal(signal.SIGTERM)
        code = await wait_exit(worker, timeout=10)  # far less than the 60 s grace
        assert code == 128 + signal.SIGTERM
        held = await producer.get_job(job_id)
        assert held is not None and held["status"] == "processing"

        successor = await fleet.start_ready("--concurrency", "2")
        job = await wait_status(producer, job_id, "done", timeout=LEASE * 4 + 20)
        rows = await attempts_of(db, job_id)

    assert job["attempts"] == 2  # an abandoned attempt counts, like a crash
    assert "WorkerLost" in job["last_error"]
    assert [r["pid"] for r in rows] == [worker.pid, successor.pid]


async def test_a_thread_job_that_outlives_the_grace_never_runs_twice_at_once(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    """A plain ``def`` job runs in a thread, which cannot be cancelled. Its worker must not hand
    it to another worker while the thread still runs it, and must still exit."""
    grace = 1.0
    with Fleet(
        clean_db, tmp_path, lease_seconds=LEASE, grace_period=grace, poll_interval=0.2
    ) as fleet:
        worker = await fleet.start_ready("--concurrency", "2")
        job_id = await producer.enqueue("sleepy_thread", first=30, later=0.05)
        await started(db, job_id)
        other = await fleet.start_ready("--concurrency", "2")

        worker.signal(signal.SIGTERM)
        code = await wait_exit(worker, timeout=grace + 15)
        exited_at = await db.fetchval("SELECT clock_timestamp()")
        assert code == 0, worker.log()
        job = await wait_status(producer, job_id, "done", timeout=LEASE * 4 + 20)
        rows = await attempts_of(db, job_id)

    assert [r["pid"] for r in rows] == [worker.pid, other.pid]
    assert rows[1]["started_at"] > exited_at  # the thread died with its process first
    assert job["attempts"] == 1  # the interrupted attempt was not used up (max_retries=0)
    assert "cannot be interrupted" in worker.log()


async def test_a_timed_out_thread_job_is_not_retried_while_its_thread_still_runs(
    app: Soniq,
) -> None:
    """``timeout`` cannot stop a plain ``def`` job's thread: the retry must wait for it."""
    spans: list[tuple[int, float, float]] = []

    @app.job(name="stubborn", timeout=0.3, max_retries=1, retry_backoff=0)
    def stubborn(ctx: JobContext) -> None:
        began = time.monotonic()
        time.sleep(2.0 if ctx.attempt == 1 else 0.01)
        spans.append((ctx.attempt, began, time.monotonic()))

    job_id = await app.enqueue("stubborn")
    async with running_worker(app, concurrency=2), running_worker(app, concurrency=2):
        job = await wait_status(app, job_id, "done", timeout=20)
    first, second = sorted(spans)
    assert (first[0], second[0]) == (1, 2)
    assert second[1] >= first[2]  # the retry began after the first thread returned
    assert job["attempts"] == 2 and "timed out" in job["last_error"]
