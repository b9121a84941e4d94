"""Issue 17, point 3: results you can await, through LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio

import asyncpg
import pydantic
import pytest

from soniq import ConfigurationError, JobCancelled, JobFailed, JobNotFound, Soniq, sql
from tests.support.waiting import running_worker, wait_until


class Total(pydantic.BaseModel):
    total: int
    currency: str


def _jobs(app: Soniq, gate: asyncio.Event) -> None:
    @app.job(name="r.total")
    async def total(amount: int) -> dict[str, object]:
        await gate.wait()
        return {"total": amount, "currency": "EUR"}

    @app.job(name="r.fail", max_retries=1, retry_backoff=0)
    async def fail() -> None:
        await gate.wait()
        raise ValueError("card declined")


async def _listeners(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1",
            f"%LISTEN%{sql.RESULTS_CHANNEL}%",
        )
    )


async def test_wait_returns_the_result_when_the_job_finishes(
    app: Soniq, db: asyncpg.Connection
) -> None:
    gate = asyncio.Event()
    _jobs(app, gate)
    job_id = await app.enqueue("r.total", amount=12)
    assert await app.get_result(job_id) is None  # not done, no wait: None at once
    async with running_worker(app):
        waiting = asyncio.create_task(app.get_result(job_id, wait=20, result_model=Total))
        # The waiter has marked the job and listens before the job may finish.
        await wait_until(
            lambda: db.fetchval("SELECT awaited FROM soniq_jobs WHERE id = $1", job_id),
            what="the job marked as awaited",
        )
        assert not waiting.done()
        gate.set()
        result = await asyncio.wait_for(waiting, 20)
    assert result == Total(total=12, currency="EUR")
    assert await app.get_result(job_id) == {"total": 12, "currency": "EUR"}


async def test_wait_is_woken_by_notify_not_by_polling(app: Soniq, db: asyncpg.Connection) -> None:
    """A waiter reads the job once, then sleeps until a notification: one LISTEN connection,
    and no statement from it while nothing happens."""
    gate = asyncio.Event()
    _jobs(app, gate)
    job_id = await app.enqueue("r.total", amount=1)
    waiting = asyncio.create_task(app.get_result(job_id, wait=30))
    await wait_until(lambda: _listeners(db), what="the LISTEN connection")
    scans = "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = $1"
    await db.execute("SELECT pg_stat_clear_snapshot()")
    before = await db.fetchval(scans, "soniq_jobs")
    # Proving an absence: nothing to wait for, so a fixed window, longer than any poll.
    await asyncio.sleep(1.5)
    await db.execute("SELECT pg_stat_clear_snapshot()")
    assert await db.fetchval(scans, "soniq_jobs") == before
    assert not waiting.done()
    async with running_worker(app):
        gate.set()
        assert await asyncio.wait_for(waiting, 20) == {"total": 1, "currency": "EUR"}


async def test_several_waiters_on_one_job_share_one_connection(
    app: Soniq, db: asyncpg.Connection
) -> None:
    gate = asyncio.Event()
    _jobs(app, gate)
    job_id = await app.enqueue("r.total", amount=5)
    waiters = [asyncio.create_task(app.get_result(job_id, wait=20)) for _ in range(3)]
    await wait_until(lambda: _listeners(db), what="the LISTEN connection")
    assert await _listeners(db) == 1
    async with running_worker(app):
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*waiters), 20)
    assert results == [{"total": 5, "currency": "EUR"}] * 3


async def test_dead_letter_raises_job_failed_with_errors(app: Soniq) -> None:
    gate = asyncio.Event()
    gate.set()
    _jobs(app, gate)
    job_id = await app.enqueue("r.fail")
    async with running_worker(app):
        with pytest.raises(JobFailed) as failed:
            await app.get_result(job_id, wait=20)
    assert failed.value.job_id == job_id and failed.value.attempts == 2
    assert failed.value.last_error == "ValueError: card declined"
    assert [e["attempt"] for e in failed.value.errors] == [1, 2]
    assert "card declined" in str(failed.value) and "2 attempt(s)" in str(failed.value)
    assert await app.get_result(job_id) is None  # without wait: not done, None


async def _marked(db: asyncpg.Connection, job_id: str) -> None:
    await wait_until(
        lambda: db.fetchval("SELECT awaited FROM soniq_jobs WHERE id = $1", job_id),
        what="the job marked as awaited",
    )


@pytest.mark.parametrize(
    ("action", "raised", "message"),
    [
        ("cancel_job", JobCancelled, "Job {id} was cancelled"),
        ("delete_job", JobNotFound, r"No job with id {id} \(deleted"),
    ],
)
async def test_a_waiter_hears_of_a_cancel_or_delete(
    app: Soniq, db: asyncpg.Connection, action: str, raised: type[Exception], message: str
) -> None:
    _jobs(app, asyncio.Event())
    job_id = await app.enqueue("r.total", amount=1, scheduled_at=3600)
    waiting = asyncio.create_task(app.get_result(job_id, wait=20))
    await _marked(db, job_id)
    assert await getattr(app, action)(job_id)
    with pytest.raises(raised, match=message.format(id=job_id)):
        await asyncio.wait_for(waiting, 20)


async def test_timeout_and_bad_arguments(app: Soniq) -> None:
    _jobs(app, asyncio.Event())
    job_id = await app.enqueue("r.total", amount=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError, match=r"did not finish within 0.3s; it is queued"):
        await app.get_result(job_id, wait=0.3)
    assert 0.25 <= loop.time() - started < 5
    with pytest.raises(TimeoutError):
        await app.get_result(job_id, wait=0)
    with pytest.raises(ConfigurationError, match="wait must be a number of seconds"):
        await app.get_result(job_id, wait=-1)
    with pytest.raises(JobNotFound):
        await app.get_result("00000000-0000-7000-8000-000000000000")
    with pytest.raises(JobNotFound):
        await app.get_result("00000000-0000-7000-8000-000000000000", wait=1)


async def test_result_model_validation_failure_is_pydantic_s(app: Soniq) -> None:
    gate = asyncio.Event()
    gate.set()
    _jobs(app, gate)
    job_id = await app.enqueue("r.total", amount=3)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    assert await app.get_result(job_id, result_model=dict[str, object]) == {
        "total": 3,
        "currency": "EUR",
    }
    with pytest.raises(pydantic.ValidationError):
        await app.get_result(job_id, wait=1, result_model=list[int])


async def test_waiter_survives_its_connection_being_killed(
    app: Soniq, db: asyncpg.Connection
) -> None:
    gate = asyncio.Event()
    _jobs(app, gate)
    job_id = await app.enqueue("r.total", amount=8)
    waiting = asyncio.create_task(app.get_result(job_id, wait=30))
    await wait_until(lambda: _listeners(db), what="the LISTEN connection")
    await db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
        f"%LISTEN%{sql.RESULTS_CHANNEL}%",
    )
    async with running_worker(app):
        gate.set()
        assert await asyncio.wait_for(waiting, 20) == {"total": 8, "currency": "EUR"}


async def test_a_plain_drain_sends_no_result_notification(
    app: Soniq, db: asyncpg.Connection, clean_db: str
) -> None:
    """Jobs nobody awaits finish without a notification on the results channel."""
    heard: list[str] = []
    conn = await asyncpg.connect(clean_db)
    await conn.add_listener(sql.RESULTS_CHANNEL, lambda *a: heard.append(a[3]))
    gate = asyncio.Event()
    gate.set()
    _jobs(app, gate)
    try:
        await app.enqueue_many("r.total", [{"amount": i} for i in range(50)])
        awaited = await app.enqueue("r.total", amount=99)
        waiting = asyncio.create_task(app.get_result(awaited, wait=20))
        await _marked(db, awaited)
        await app.run_worker(run_once=True, install_signal_handlers=False)
        assert await asyncio.wait_for(waiting, 20) == {"total": 99, "currency": "EUR"}
        await wait_until(lambda: heard, what="the one notification")
        await conn.execute("SELECT 1")  # any notification still in flight arrives first
        assert heard == [awaited]
    finally:
        await conn.close()
