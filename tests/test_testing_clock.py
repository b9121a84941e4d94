"""Issue 19: what Clock.advance moves, in Python and in the database (Store.shift_times)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from soniq import ConfigurationError, Soniq, clock
from soniq.testing import Clock


async def test_advance_moves_soniq_time_and_reset_brings_it_back() -> None:
    with Clock() as c:
        before = datetime.now(timezone.utc)
        await c.advance(timedelta(days=1))
        assert c.now() - before >= timedelta(days=1)
        assert clock.offset() == 86400
        for bad in (-1, float("nan"), "5", True):
            with pytest.raises(ConfigurationError, match="only moves forward"):
                await c.advance(bad)  # type: ignore[arg-type]
    assert clock.offset() == 0


async def test_advance_shifts_stored_job_times_but_not_heartbeats(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="noop")
    async def noop() -> None:
        pass

    job_id = await app.enqueue(noop, scheduled_at=timedelta(minutes=5))
    await db.execute(
        "INSERT INTO soniq_workers (id, hostname, pid, concurrency) VALUES ('w', 'h', 1, 1)"
    )
    query = "SELECT scheduled_at, created_at FROM soniq_jobs WHERE id = $1"
    before = await db.fetchrow(query, job_id)
    beat = await db.fetchval("SELECT heartbeat_at FROM soniq_workers")

    with Clock(app, app) as c:  # one database, attached twice: its times move once
        await c.advance(300)

    after = await db.fetchrow(query, job_id)
    assert before["scheduled_at"] - after["scheduled_at"] == timedelta(seconds=300)
    assert before["created_at"] - after["created_at"] == timedelta(seconds=300)
    assert await db.fetchval("SELECT heartbeat_at FROM soniq_workers") == beat
    # Due now for the database, unchanged SQL: the queue reports it ready.
    [status] = await app.queue_status()
    assert (status["ready"], status["scheduled"]) == (1, 0)
