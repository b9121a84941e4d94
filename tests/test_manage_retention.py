"""Issue 17, point 5: retention per state, purged in bounded batches by one worker at a time."""

from __future__ import annotations

import asyncpg
import pytest

from soniq import ConfigurationError, Soniq, sql_manage
from soniq.retention import purge_expired


async def _rows(db: asyncpg.Connection, status: str, n: int, age_s: float) -> None:
    await db.execute(
        """INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, created_at,
                                   finished_at)
           SELECT gen_random_uuid(), 'p.x', 'default', '{}', $1::soniq_job_status, 1,
                  now() - make_interval(secs => $3 + 5), now() - make_interval(secs => $3)
           FROM generate_series(1, $2)""",
        status,
        n,
        age_s,
    )


async def _counts(db: asyncpg.Connection) -> dict[str, int]:
    rows = await db.fetch("SELECT status::text, count(*) FROM soniq_jobs GROUP BY 1")
    return {r[0]: r[1] for r in rows}


async def test_defaults_keep_dead_letters(app: Soniq) -> None:
    s = app.settings
    assert s.done_retention == s.cancelled_retention == 7 * 86400
    assert s.dead_letter_retention == 0  # kept
    with pytest.raises(ConfigurationError, match="dead_letter_retention"):
        Soniq("postgresql://x@127.0.0.1/x", dead_letter_retention=-1)


async def test_each_state_has_its_own_retention(clean_db: str, db: asyncpg.Connection) -> None:
    for status in ("done", "cancelled", "dead_letter"):
        await _rows(db, status, 3, age_s=7200)  # two hours old
        await _rows(db, status, 2, age_s=60)  # a minute old
    await _rows(db, "queued", 4, age_s=7200)  # never purged, however old
    async with Soniq(clean_db, done_retention=3600, cancelled_retention=0) as app:
        purge = await purge_expired(app._admin, app.settings)
        assert (purge.deleted, purge.held) == (3, True)
        assert await _counts(db) == {"done": 2, "cancelled": 5, "dead_letter": 5, "queued": 4}
    async with Soniq(
        clean_db, done_retention=30, cancelled_retention=3600, dead_letter_retention=3600
    ) as app:
        purge = await purge_expired(app._admin, app.settings)
        assert purge.deleted == 2 + 3 + 3
        assert await _counts(db) == {"cancelled": 2, "dead_letter": 2, "queued": 4}


async def test_purge_runs_in_bounded_batches(clean_db: str, db: asyncpg.Connection) -> None:
    await _rows(db, "done", 95, age_s=7200)
    async with Soniq(clean_db, done_retention=3600) as app:
        purge = await purge_expired(app._admin, app.settings, batch=20)
        assert (purge.deleted, purge.batches) == (95, 5)  # 20+20+20+20+15
        purge = await purge_expired(app._admin, app.settings, batch=20, budget=0)
        assert (purge.deleted, purge.batches) == (0, 1)


async def test_one_purger_at_a_time(clean_db: str, db: asyncpg.Connection) -> None:
    """While another session holds the purge (its transaction-level lock), a worker's purge
    deletes nothing and returns at once; once it commits, the next purge proceeds."""
    await _rows(db, "done", 10, age_s=7200)
    async with Soniq(clean_db, done_retention=3600) as app:
        async with db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock($1)", sql_manage.RETENTION_LOCK_KEY)
            purge = await purge_expired(app._admin, app.settings)
            assert (purge.deleted, purge.held) == (0, False)
        assert await _counts(db) == {"done": 10}
        purge = await purge_expired(app._admin, app.settings)
        assert (purge.deleted, purge.held) == (10, True)


async def test_purge_reads_only_rows_that_may_have_expired(
    clean_db: str, db: asyncpg.Connection
) -> None:
    """The done/cancelled scan is bounded by created_at on soniq_jobs_done: a million fresh
    done rows are not read to find that none has expired."""
    await _rows(db, "done", 5000, age_s=10)
    await db.execute("ANALYZE soniq_jobs")
    plan = "\n".join(
        r[0]
        for r in await db.fetch(
            "EXPLAIN (ANALYZE, BUFFERS) " + sql_manage.PURGE_EXPIRED, 3600.0, 3600.0, 0.0, 5000
        )
    )
    done_part = plan.split("CTE cancelled")[0]
    assert "soniq_jobs_done" in done_part, plan
    assert "Rows Removed by Filter" not in done_part, plan  # nothing read to be thrown away


async def test_a_running_worker_purges_and_keeps_dead_letters(
    clean_db: str, db: asyncpg.Connection
) -> None:
    from tests.support.waiting import running_worker, wait_until

    await _rows(db, "done", 30, age_s=7200)
    await _rows(db, "cancelled", 30, age_s=7200)
    await _rows(db, "dead_letter", 30, age_s=30 * 86400)  # a month old, kept by default
    async with (
        Soniq(clean_db, done_retention=3600, cancelled_retention=3600, lease_seconds=3) as app,
        running_worker(app),
    ):

        async def purged() -> bool:
            return await _counts(db) == {"dead_letter": 30}

        await wait_until(purged, timeout=20, what="the worker's retention purge")
