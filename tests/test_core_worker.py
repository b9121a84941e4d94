"""Issue 2, points 6-8: the worker, inspection, retries and the dead-letter queue."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from soniq import Backoff, CancelResult, JobTimeout, Soniq
from soniq.testing import Clock, Outcomes, drain
from tests.support.waiting import running_worker, wait_status, wait_until


async def test_priority_then_due_time_then_fifo(app: Soniq, db: asyncpg.Connection) -> None:
    order: list[str] = []

    @app.job(name="t.mark")
    async def mark(label: str) -> None:
        order.append(label)

    # Due times in the past, set on the database clock, so "due time" is distinct from FIFO.
    await app.enqueue("t.mark", label="p5-first", priority=5)
    await app.enqueue("t.mark", label="p0-late-due", priority=0, scheduled_at=-10)
    await app.enqueue("t.mark", label="p0-early-due", priority=0, scheduled_at=-20)
    await app.enqueue("t.mark", label="p5-second", priority=5)
    await app.enqueue("t.mark", label="p-1", priority=-1)
    # concurrency 1: the claim order is the run order.
    await app.run_worker(concurrency=1, run_once=True, install_signal_handlers=False)
    assert order == ["p-1", "p0-early-due", "p0-late-due", "p5-first", "p5-second"]


async def test_delayed_job_does_not_run_early_and_wakes_the_worker(clean_db: str) -> None:
    app = Soniq(clean_db, poll_interval=60)  # only the due-time timer can wake it in time
    started: list[float] = []

    @app.job()
    async def later() -> None:
        started.append(time.monotonic())

    async with running_worker(app):
        t0 = time.monotonic()
        job_id = await app.enqueue(later, scheduled_at=1.5)
        await wait_status(app, job_id, "done", timeout=10)
    await app.close()
    waited = started[0] - t0
    assert 1.4 <= waited < 2.8, waited


async def test_run_once_processes_ready_jobs_and_returns(app: Soniq) -> None:
    ran: list[int] = []

    @app.job()
    async def job(n: int) -> None:
        ran.append(n)

    await app.enqueue_many(job, [{"n": i} for i in range(25)])
    future = await app.enqueue(job, n=99, scheduled_at=60)
    await asyncio.wait_for(
        app.run_worker(concurrency=4, run_once=True, install_signal_handlers=False), 20
    )
    assert sorted(ran) == list(range(25))
    job_row = await app.get_job(future)
    assert job_row is not None and job_row["status"] == "queued"


async def test_worker_takes_only_its_queues(app: Soniq) -> None:
    @app.job(name="q.job")
    async def job() -> None: ...

    a = await app.enqueue("q.job", queue="a")
    b = await app.enqueue("q.job", queue="b")
    c = await app.enqueue("q.job", queue="c")
    await app.run_worker(queues=["a", "b"], run_once=True, install_signal_handlers=False)
    assert [(await app.get_job(i) or {})["status"] for i in (a, b, c)] == ["done", "done", "queued"]


async def test_claims_several_jobs_per_round_trip(app: Soniq) -> None:
    concurrent = 0
    peak = 0
    gate = asyncio.Event()

    @app.job()
    async def job() -> None:
        nonlocal concurrent, peak
        concurrent += 1
        peak = max(peak, concurrent)
        await gate.wait()
        concurrent -= 1

    await app.enqueue_many(job, [{}] * 8)
    async with running_worker(app, concurrency=8):
        await wait_until(lambda: peak == 8, what="8 jobs running at once")
        gate.set()


async def test_get_job_fields(app: Soniq) -> None:
    @app.job(name="t.add")
    async def add(a: int, b: int) -> dict[str, int]:
        return {"sum": a + b}

    job_id = await app.enqueue("t.add", a=2, b=3)
    outcomes = await drain(app)
    assert [(o.job_id, o.outcome, o.result) for o in outcomes] == [(job_id, "done", {"sum": 5})]
    job = await app.get_job(job_id)
    assert job is not None
    expected = {
        "id",
        "job_name",
        "args",
        "status",
        "attempts",
        "max_attempts",
        "queue",
        "priority",
        "scheduled_at",
        "last_error",
        "result",
        "created_at",
        "started_at",
        "finished_at",
    }
    assert expected <= set(job)
    assert job["id"] == job_id and job["status"] == "done" and job["result"] == {"sum": 5}
    assert job["created_at"] <= job["started_at"] <= job["finished_at"]
    assert await app.get_job("00000000-0000-0000-0000-000000000000") is None
    with pytest.raises(ValueError, match="not a job id"):
        await app.get_job("nope")


async def test_cancel_queued_job(app: Soniq) -> None:
    ran = []

    @app.job()
    async def job() -> None:
        ran.append(1)

    job_id = await app.enqueue(job)
    assert await app.cancel_job(job_id) == CancelResult.CANCELLED
    assert await app.cancel_job(job_id) == CancelResult.ALREADY_FINISHED
    await app.run_worker(run_once=True, install_signal_handlers=False)
    assert ran == []
    row = await app.get_job(job_id)
    assert row is not None and row["status"] == "cancelled"


async def test_retries_until_max_then_dead_letter_with_traceback(
    app: Soniq, soniq_clock: Clock
) -> None:
    attempts: list[int] = []

    @app.job(max_retries=2, retry_backoff=0.05)
    async def flaky() -> None:
        attempts.append(len(attempts) + 1)
        raise ValueError("nope")

    job_id = await app.enqueue(flaky)
    soniq_clock.attach(app)
    outcomes = Outcomes()
    for _ in range(3):  # each drain runs what is due; the clock brings the next retry due
        outcomes += await drain(app)
        await soniq_clock.advance(1)
    assert [o.outcome for o in outcomes] == ["retry", "retry", "dead_letter"]
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "dead_letter"
    assert attempts == [1, 2, 3]
    assert job["attempts"] == 3 == job["max_attempts"]
    assert job["last_error"] == "ValueError: nope"
    assert "Traceback" in job["traceback"] and "raise ValueError" in job["traceback"]
    assert job["finished_at"] is not None


async def test_success_after_a_retry(app: Soniq, soniq_clock: Clock) -> None:
    calls = 0

    @app.job(retry_backoff=0.05)
    async def once_broken() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("transient")
        return "ok"

    job_id = await app.enqueue(once_broken)
    soniq_clock.attach(app)
    outcomes = await drain(app)
    await soniq_clock.advance(1)  # the retry's backoff
    outcomes += await drain(app)
    assert [(o.attempt, o.outcome) for o in outcomes] == [(1, "retry"), (2, "done")]
    job = await app.get_job(job_id)
    assert job is not None and job["attempts"] == 2 and job["result"] == "ok"
    assert job["last_error"] == "RuntimeError: transient"  # kept for inspection


async def test_retry_runs_within_a_second_of_coming_due(clean_db: str) -> None:
    app = Soniq(clean_db, poll_interval=60)  # the retry timer, not polling, must wake it
    starts: list[datetime] = []

    @app.job(max_retries=1, retry_backoff=Backoff(base=1.0, factor=1, max_delay=1, jitter=0))
    async def fails_once() -> None:
        starts.append(datetime.now(timezone.utc))
        if len(starts) == 1:
            raise RuntimeError("first attempt fails")

    job_id = await app.enqueue(fails_once)
    async with running_worker(app):
        await wait_status(app, job_id, "done", timeout=10)
    await app.close()
    gap = (starts[1] - starts[0]).total_seconds()
    assert 1.0 <= gap < 2.0, gap


async def test_timeout_is_a_failed_attempt(app: Soniq) -> None:
    @app.job(timeout=0.2, max_retries=0)
    async def sleepy() -> None:
        await asyncio.sleep(30)

    job_id = await app.enqueue(sleepy)
    async with running_worker(app):
        job = await wait_status(app, job_id, "dead_letter")
    assert job["last_error"].startswith(JobTimeout.__name__)
    assert "timed out after 0.2s" in job["last_error"]


async def test_retry_dead_letter_gives_fresh_attempts(app: Soniq) -> None:
    should_fail = True

    @app.job(max_retries=0)
    async def job() -> str:
        if should_fail:
            raise RuntimeError("down")
        return "recovered"

    job_id = await app.enqueue(job)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    assert (await app.get_job(job_id) or {})["status"] == "dead_letter"
    assert [j["id"] for j in await app.list_dead_letters()] == [job_id]
    should_fail = False
    assert await app.retry_dead_letter(job_id) is True
    assert await app.retry_dead_letter(job_id) is False  # no longer dead-lettered
    await app.run_worker(run_once=True, install_signal_handlers=False)
    job_row = await app.get_job(job_id)
    assert job_row is not None
    assert (job_row["status"], job_row["attempts"], job_row["result"]) == ("done", 1, "recovered")


async def test_result_that_cannot_be_stored_still_counts_as_done(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    @app.job()
    async def weird() -> object:
        return object()

    job_id = await app.enqueue(weird)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "done" and job["result"] is None
    assert any("cannot be stored as JSON" in r.getMessage() for r in caplog.records)


async def test_non_positive_concurrency_is_refused(app: Soniq) -> None:
    from soniq import ConfigurationError

    with pytest.raises(ConfigurationError, match="concurrency"):
        await app.run_worker(concurrency=0)


async def test_due_time_is_on_the_database_clock(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job()
    async def job() -> None: ...

    job_id = await app.enqueue(job, scheduled_at=timedelta(seconds=30))
    row = await db.fetchrow(
        "SELECT scheduled_at - created_at AS d FROM soniq_jobs WHERE id = $1", job_id
    )
    assert row is not None and abs(row["d"].total_seconds() - 30) < 0.5


async def test_zero_delay_retry_runs_at_once(clean_db: str) -> None:
    app = Soniq(clean_db, poll_interval=60)  # nothing but the retry itself may wake the worker
    starts: list[float] = []

    @app.job(max_retries=1, retry_backoff=0)
    async def fails_once() -> None:
        starts.append(time.monotonic())
        if len(starts) == 1:
            raise RuntimeError("first attempt fails")

    job_id = await app.enqueue(fails_once)
    async with running_worker(app):
        await wait_status(app, job_id, "done", timeout=10)
    await app.close()
    assert starts[1] - starts[0] < 1.0


async def test_a_wakeup_during_a_round_trip_is_not_lost(clean_db: str) -> None:
    """A job enqueued after a claim's snapshot but whose NOTIFY is heard before the claim
    returns: the worker must look again, not sleep until its poll (60 s here)."""
    app = Soniq(clean_db, poll_interval=60)
    ran = asyncio.Event()

    @app.job()
    async def later() -> None:
        ran.set()

    @app.job()
    async def warm() -> None:
        pass

    async with running_worker(app) as worker:
        # Past start-up's own wakes (LISTEN up, controls read): one job run, then idle.
        await wait_status(app, await app.enqueue(warm), "done")
        await wait_until(lambda: not worker._wake.is_set(), what="the worker to go idle")
        original = worker._round_trip
        enqueued: list[str] = []

        async def round_trip(*args: Any, **kwargs: Any) -> Any:
            claim = await original(*args, **kwargs)  # saw no job
            if not enqueued:
                enqueued.append(await app.enqueue(later, scheduled_at=0.3))
                # The NOTIFY is heard while this round trip is still "in flight".
                await wait_until(worker._wake.is_set, what="the enqueue's NOTIFY")
            return claim

        worker._round_trip = round_trip  # type: ignore[method-assign]
        worker._wake.set()  # let the idle worker take one more round trip
        await asyncio.wait_for(ran.wait(), 10)
    await app.close()
