"""Issue 2, point 5: enqueue, checked at enqueue time, single, batch and transactional."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from soniq import ConfigurationError, JobArgumentsError, Soniq, UnknownJobError
from tests.support.waiting import running_worker, wait_status


@pytest.fixture
def jobs(app: Soniq) -> Soniq:
    @app.job(name="mail.send", queue="mail", priority=5)
    async def send(to: str, subject: str = "hi") -> str:
        return to

    return app


async def count(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM soniq_jobs"))


async def test_enqueue_returns_a_uuid_and_stores_the_job(jobs: Soniq) -> None:
    job_id = await jobs.enqueue("mail.send", to="a@example.com")
    assert str(uuid.UUID(job_id)) == job_id
    job = await jobs.get_job(job_id)
    assert job is not None
    assert job["job_name"] == "mail.send"
    assert job["args"] == {"to": "a@example.com"}
    assert (job["status"], job["queue"], job["priority"]) == ("queued", "mail", 5)
    assert (job["attempts"], job["max_attempts"]) == (0, 4)


async def test_enqueue_overrides_queue_and_priority(jobs: Soniq) -> None:
    job_id = await jobs.enqueue("mail.send", queue="urgent", priority=-1, to="x")
    job = await jobs.get_job(job_id)
    assert job is not None and (job["queue"], job["priority"]) == ("urgent", -1)


@pytest.mark.parametrize(
    "when",
    [timedelta(minutes=5), 300, 300.0, "aware"],
)
async def test_scheduled_at_forms(jobs: Soniq, db: asyncpg.Connection, when: object) -> None:
    db_now: datetime = await db.fetchval("SELECT now()")
    if when == "aware":
        when = datetime.now(timezone.utc) + timedelta(minutes=5)
    job_id = await jobs.enqueue("mail.send", scheduled_at=when, to="x")  # type: ignore[arg-type]
    job = await jobs.get_job(job_id)
    assert job is not None
    delta = (job["scheduled_at"] - db_now).total_seconds()
    assert 295 < delta < 310


async def test_naive_datetime_is_refused(jobs: Soniq, db: asyncpg.Connection) -> None:
    with pytest.raises(ConfigurationError, match="timezone"):
        await jobs.enqueue("mail.send", scheduled_at=datetime.now(), to="x")
    assert await count(db) == 0


async def test_unknown_job_name_is_refused(jobs: Soniq, db: asyncpg.Connection) -> None:
    with pytest.raises(UnknownJobError, match=r"mail.sned.*registered: mail.send"):
        await jobs.enqueue("mail.sned", to="x")
    assert await count(db) == 0


async def test_unregistered_function_is_refused(jobs: Soniq) -> None:
    async def stray() -> None: ...

    with pytest.raises(JobArgumentsError, match="not a registered job"):
        await jobs.enqueue(stray)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "missing required argument 'to'"),
        ({"to": "x", "cc": "y"}, "unexpected keyword argument 'cc'"),
    ],
)
async def test_kwargs_that_do_not_bind_are_refused(
    jobs: Soniq, db: asyncpg.Connection, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(JobArgumentsError, match=message):
        await jobs.enqueue("mail.send", **kwargs)
    assert await count(db) == 0


@pytest.mark.parametrize(
    "value", [datetime.now(timezone.utc), {1, 2}, object(), float("nan"), b"bytes"]
)
async def test_unserialisable_arguments_are_refused(
    jobs: Soniq, db: asyncpg.Connection, value: object
) -> None:
    with pytest.raises(JobArgumentsError, match=r"argument 'to'.*JSON-serialisable"):
        await jobs.enqueue("mail.send", to=value)
    assert await count(db) == 0


async def test_enqueue_many_writes_a_batch_in_order(jobs: Soniq) -> None:
    ids = await jobs.enqueue_many("mail.send", [{"to": f"u{i}"} for i in range(250)])
    assert len(ids) == len(set(ids)) == 250
    for i in (0, 137, 249):
        job = await jobs.get_job(ids[i])
        assert job is not None and job["args"] == {"to": f"u{i}"}


async def test_enqueue_many_is_all_or_nothing(jobs: Soniq, db: asyncpg.Connection) -> None:
    with pytest.raises(JobArgumentsError, match="missing required argument 'to'"):
        await jobs.enqueue_many("mail.send", [{"to": "a"}, {"subject": "no recipient"}])
    assert await count(db) == 0


async def test_enqueue_many_is_one_statement(jobs: Soniq, db: asyncpg.Connection) -> None:
    # One INSERT statement: its AFTER STATEMENT trigger sends a single notification.
    received: list[str] = []
    await db.add_listener("soniq_jobs", lambda *a: received.append(a[3]))
    await jobs.enqueue_many("mail.send", [{"to": f"u{i}"} for i in range(50)])
    await db.execute("SELECT 1")  # notifications arrive before the next reply
    assert received == ["mail"]


async def test_transactional_enqueue_rollback_leaves_no_job(
    jobs: Soniq, db: asyncpg.Connection
) -> None:
    conn = await asyncpg.connect(await jobs._store.resolve())
    try:
        tr = conn.transaction()
        await tr.start()
        job_id = await jobs.enqueue("mail.send", to="x", connection=conn)
        assert await conn.fetchval("SELECT count(*) FROM soniq_jobs") == 1
        await tr.rollback()
    finally:
        await conn.close()
    assert await count(db) == 0
    assert await jobs.get_job(job_id) is None


async def test_transactional_enqueue_commit_wakes_a_worker(clean_db: str) -> None:
    # Polling every 60 s: only NOTIFY at commit can make the job start promptly.
    app = Soniq(clean_db, poll_interval=60)

    @app.job()
    async def job() -> None: ...

    async with running_worker(app):
        conn = await asyncpg.connect(clean_db)
        try:
            async with conn.transaction():
                job_id = await app.enqueue(job, connection=conn)
        finally:
            await conn.close()
        await wait_status(app, job_id, "done", timeout=5)
    await app.close()
