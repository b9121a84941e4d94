"""The enqueue fast path: a kept connection with a watchdog, time-ordered ids, batch statements.

Speed itself is measured in bench/, not here; these tests hold the fast path to the same
promises as the slow one.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from soniq import DatabaseUnavailable, Soniq
from soniq.app import new_job_id
from tests.support.waiting import wait_until


def test_job_ids_are_uuid7_in_creation_order() -> None:
    first = [new_job_id() for _ in range(1000)]
    time.sleep(0.002)  # ids of a later millisecond sort after all of these
    later = new_job_id()
    for text in [*first, later]:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert str(parsed) == text
    assert len(set(first)) == 1000
    assert all(later > earlier for earlier in first)
    millis = int(later.replace("-", "")[:12], 16)
    assert abs(millis - time.time() * 1000) < 5000


async def test_concurrent_enqueues_all_land(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job(name="job")
    async def job(i: int) -> None:
        pass

    # One of them gets the kept connection, the others go through the pool meanwhile.
    ids = await asyncio.gather(*(app.enqueue("job", i=i) for i in range(40)))
    rows = await db.fetch("SELECT id::text, (args->>'i')::int AS i FROM soniq_jobs")
    assert {r["id"]: r["i"] for r in rows} == {job_id: i for i, job_id in enumerate(ids)}


async def test_enqueue_many_takes_any_iterable_and_keeps_order(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job")
    async def job(i: int) -> None:
        pass

    ids = await app.enqueue_many("job", ({"i": i} for i in range(250)))
    rows = await db.fetch("SELECT id::text, (args->>'i')::int AS i FROM soniq_jobs")
    assert {r["id"]: r["i"] for r in rows} == {job_id: i for i, job_id in enumerate(ids)}
    assert len(set(ids)) == 250


async def test_an_enqueue_that_hangs_fails_after_command_timeout(
    clean_db: str, db: asyncpg.Connection
) -> None:
    # asyncpg gives its cancel request command_timeout too: not so short that a busy machine
    # misses it.
    app = Soniq(clean_db, command_timeout=2.0)

    @app.job(name="job")
    async def job() -> None:
        pass

    try:
        await app.enqueue("job")  # the kept connection exists and is idle
        async with db.transaction():
            await db.execute("LOCK TABLE soniq_jobs IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="command_timeout"):
                await app.enqueue("job")
            waited = time.monotonic() - started

            async def cancelled() -> bool:
                waiting = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock' "
                    "AND query LIKE '%INSERT INTO soniq_jobs%'"
                )
                return bool(waiting == 0)

            # The statement is cancelled on the server, not left waiting to commit once the lock
            # goes.
            await wait_until(cancelled, timeout=10, what="the stuck INSERT to be cancelled")
        assert 1.9 < waited < 10.0
        # The stuck connection was dropped; the next enqueue opens a new one.
        await app.enqueue("job")
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 2
    finally:
        await app.close()
