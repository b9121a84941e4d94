"""A Soniq app that worker subprocesses import in the job-control tests.

``control.overlap`` records each run's start and end on the database clock in ``control_runs``,
so a test can compute how many ran at once across processes; ``control.sleeper`` records its
start and then sleeps, for cancelling it from another process.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg

from soniq import JobContext, Soniq

app = Soniq(poll_interval=0.5, lease_seconds=5)

_pool: asyncpg.Pool | None = None

SCHEMA = """
CREATE TABLE IF NOT EXISTS control_runs (
    job_id uuid NOT NULL, pid int NOT NULL, queue text NOT NULL,
    started timestamptz NOT NULL, ended timestamptz)
"""


async def _db() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["SONIQ_DATABASE_URL"], min_size=1, max_size=4)
    return _pool


async def _start(ctx: JobContext) -> None:
    pool = await _db()
    await pool.execute(
        "INSERT INTO control_runs (job_id, pid, queue, started) "
        "VALUES ($1, $2, $3, clock_timestamp())",
        ctx.job_id,
        os.getpid(),
        ctx.queue,
    )


async def _end(ctx: JobContext) -> None:
    pool = await _db()
    await pool.execute(
        "UPDATE control_runs SET ended = clock_timestamp() WHERE job_id = $1 AND ended IS NULL",
        ctx.job_id,
    )


@app.job(name="control.overlap", queue="limited")
async def overlap(ms: int, ctx: JobContext) -> None:
    await _start(ctx)
    try:
        await asyncio.sleep(ms / 1000)
    finally:
        await _end(ctx)


@app.job(name="control.sleeper", queue="sleepy")
async def sleeper(seconds: float, ctx: JobContext) -> None:
    await _start(ctx)
    await asyncio.sleep(seconds)
    await _end(ctx)


# How many ran at once at most: for each start, the runs whose interval contains it.
MAX_OVERLAP = """
SELECT coalesce(max(n), 0) FROM (
    SELECT (SELECT count(*) FROM control_runs AS b
            WHERE b.started <= a.started AND coalesce(b.ended, 'infinity') > a.started) AS n
    FROM control_runs AS a WHERE a.queue = $1) AS o
"""
