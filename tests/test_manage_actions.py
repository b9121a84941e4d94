"""Issue 17, points 4 and 5: act on one job or many, and per-queue stats."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from soniq import ConfigurationError, Soniq
from tests.support.waiting import running_worker, wait_until


def _jobs(app: Soniq) -> None:
    @app.job(name="a.ok")
    async def ok(n: int) -> int:
        return n

    @app.job(name="a.fail", max_retries=0)
    async def fail(n: int) -> None:
        raise RuntimeError(f"no {n}")


async def _states(db: asyncpg.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in await db.fetch("SELECT id::text, status::text FROM soniq_jobs")}


async def test_retry_job_runs_dead_cancelled_and_done_jobs_again(
    app: Soniq, db: asyncpg.Connection
) -> None:
    _jobs(app)
    done = await app.enqueue("a.ok", n=1)
    dead = await app.enqueue("a.fail", n=2)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    cancelled = await app.enqueue("a.ok", n=3, scheduled_at=3600)
    assert await app.cancel_job(cancelled)
    queued = await app.enqueue("a.ok", n=4, scheduled_at=3600)
    for job_id in (done, dead, cancelled):
        assert await app.retry_job(job_id), job_id
        job = await app.get_job(job_id)
        assert job is not None
        assert (job["status"], job["attempts"], job["result"], job["finished_at"]) == (
            "queued",
            0,
            None,
            None,
        )
    assert not await app.retry_job(queued)  # not finished: nothing to retry
    assert not await app.retry_job("00000000-0000-7000-8000-000000000000")
    dead_job = await app.get_job(dead)
    assert dead_job is not None and len(dead_job["errors"]) == 1  # the history stays
    await app.run_worker(run_once=True, install_signal_handlers=False)
    states = await _states(db)
    assert (states[done], states[dead], states[cancelled]) == ("done", "dead_letter", "done")
    assert await app.get_result(done) == 1


async def test_retry_wakes_an_idle_worker(app: Soniq) -> None:
    _jobs(app)
    job_id = await app.enqueue("a.ok", n=5)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    async with running_worker(app, concurrency=1):
        # poll_interval is 0.5 s in the fixture; the retry's NOTIFY is what wakes it sooner,
        # but either way the job must run again.
        assert await app.retry_job(job_id)
        await wait_until(
            lambda: _done_twice(app, job_id), timeout=10, what="the retried job to finish"
        )


async def _done_twice(app: Soniq, job_id: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == "done" and job["attempts"] == 1


async def test_delete_job_never_deletes_a_running_one(app: Soniq) -> None:
    gate = asyncio.Event()

    @app.job(name="a.slow")
    async def slow() -> None:
        await gate.wait()

    job_id = await app.enqueue("a.slow")
    async with running_worker(app):
        await wait_until(lambda: _status(app, job_id, "processing"), what="job running")
        assert not await app.delete_job(job_id)
        assert not await app.bulk_jobs("delete", queue="default")
        gate.set()
        await wait_until(lambda: _status(app, job_id, "done"), what="job done")
    assert await app.delete_job(job_id)
    assert await app.get_job(job_id) is None
    assert not await app.delete_job(job_id)


async def _status(app: Soniq, job_id: str, status: str) -> bool:
    job = await app.get_job(job_id)
    return job is not None and job["status"] == status


async def test_bulk_actions_count_and_dry_run(app: Soniq, db: asyncpg.Connection) -> None:
    _jobs(app)
    await app.enqueue_many("a.fail", [{"n": i} for i in range(7)], queue="billing")
    await app.enqueue_many("a.ok", [{"n": i} for i in range(4)], queue="billing")
    await app.run_worker(run_once=True, install_signal_handlers=False)
    await app.enqueue_many("a.ok", [{"n": i} for i in range(6)], queue="mail", scheduled_at=3600)
    before = await _states(db)

    assert await app.bulk_jobs("retry", dry_run=True, status="dead_letter") == 7
    assert await app.bulk_jobs("cancel", dry_run=True, queue="mail") == 6
    assert await app.bulk_jobs("delete", dry_run=True, job_name="a.ok") == 10
    assert await app.bulk_jobs("retry", dry_run=True, queue="billing") == 11  # dead + done
    assert await _states(db) == before  # a dry run changes nothing

    assert await app.bulk_jobs("retry", status="dead_letter", args_contains={"n": 3}) == 1
    assert await app.bulk_jobs("retry", status="dead_letter") == 6
    assert await app.bulk_jobs("cancel", queue="mail") == 6
    assert await app.bulk_jobs("cancel", queue="mail") == 0  # already cancelled
    stats = {s["queue"]: s for s in await app.get_queue_stats()}
    assert stats["billing"] == {
        "queue": "billing",
        "total": 11,
        "queued": 7,
        "processing": 0,
        "done": 4,
        "dead_letter": 0,
        "cancelled": 0,
    }
    assert stats["mail"]["cancelled"] == 6 and stats["mail"]["total"] == 6
    assert await app.bulk_jobs("delete", status="cancelled") == 6
    assert await app.bulk_jobs("delete", all=True) == 11
    assert await _states(db) == {}
    assert await app.get_queue_stats() == []


async def test_bulk_goes_through_more_rows_than_a_batch(
    app: Soniq, db: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from soniq import store_admin

    monkeypatch.setattr(store_admin, "BULK_BATCH", 40)  # several batches on a small table
    await db.execute(
        """INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, finished_at)
           SELECT gen_random_uuid(), 'a.ok', 'default', '{}', 'done', 1, now()
           FROM generate_series(1, 130)"""
    )
    assert await app.bulk_jobs("retry", status="done") == 130
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'queued'") == 130


async def test_bulk_refuses_what_it_cannot_mean(app: Soniq) -> None:
    for action in ("delete", "retry", "cancel"):
        with pytest.raises(ConfigurationError, match=r"with no filter would .* or all=True"):
            await app.bulk_jobs(action)
    with pytest.raises(ConfigurationError, match=r"unknown action 'purge'; use one of retry"):
        await app.bulk_jobs("purge", status="done")
    with pytest.raises(ConfigurationError, match=r"unknown filter\(s\) name; filters are queue"):
        await app.bulk_jobs("delete", name="x")
    with pytest.raises(ConfigurationError, match=r"unknown job status 'finished'"):
        await app.bulk_jobs("delete", status="finished")
