"""The jobs the reliability tests run in worker processes (``soniq worker tests.apps.jobs:app``).

Every attempt writes a row to ``reliability_attempts`` when it starts and stamps ``ended_at``
when it finishes, on the database clock, so a test can see which process ran which attempt and
check that no two attempts of one job overlapped. The producer side of a test builds the same
app with :func:`build` to enqueue by the same names.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import asyncpg

from soniq import JobContext, Soniq

ATTEMPTS_TABLE = """
CREATE TABLE IF NOT EXISTS reliability_attempts (
    job_id      uuid NOT NULL,
    attempt     integer NOT NULL,
    pid         integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at    timestamptz
)
"""

# The count is taken from the snapshot before the insert, hence the + 1.
_START = """
WITH ins AS (INSERT INTO reliability_attempts (job_id, attempt, pid) VALUES ($1, $2, $3))
SELECT count(*) + 1 FROM reliability_attempts WHERE job_id = $1
"""
_END = """
UPDATE reliability_attempts SET ended_at = clock_timestamp()
WHERE job_id = $1 AND attempt = $2 AND pid = $3
"""


def build(database_url: str | None = None, **settings: object) -> Soniq:
    app = Soniq(database_url, **settings)

    async def started(ctx: JobContext) -> int:
        """Record the start; returns how many attempts of this job have started so far."""
        pool = await app.pool()
        runs: int = await pool.fetchval(_START, ctx.job_id, ctx.attempt, os.getpid())
        return runs

    async def ended(ctx: JobContext) -> None:
        pool = await app.pool()
        await pool.execute(_END, ctx.job_id, ctx.attempt, os.getpid())

    async def sleep_and_record(ctx: JobContext, first: float, later: float) -> int:
        runs = await started(ctx)
        await asyncio.sleep(first if runs == 1 else later)
        await ended(ctx)
        return os.getpid()

    @app.job(name="sleepy", max_retries=3)
    async def sleepy(ctx: JobContext, first: float, later: float = 0.0) -> int:
        """Sleeps ``first`` seconds on its first run, ``later`` on any run after that."""
        return await sleep_and_record(ctx, first, later)

    @app.job(name="sleepy_once", max_retries=0)
    async def sleepy_once(ctx: JobContext, first: float, later: float = 0.0) -> int:
        """Like ``sleepy`` with no retries: a used-up attempt would dead-letter it."""
        return await sleep_and_record(ctx, first, later)

    async def in_thread(query: str, ctx: JobContext) -> int:
        # A plain ``def`` job has no loop of its own; a short-lived connection does the write.
        conn = await asyncpg.connect(app._store.url)
        try:
            value: int = await conn.fetchval(query, ctx.job_id, ctx.attempt, os.getpid())
            return value
        finally:
            await conn.close()

    @app.job(name="sleepy_thread", max_retries=0)
    def sleepy_thread(ctx: JobContext, first: float, later: float = 0.0) -> int:
        """A plain ``def`` job: it runs in a thread, which no shutdown can interrupt."""
        runs = asyncio.run(in_thread(_START, ctx))
        time.sleep(first if runs == 1 else later)
        asyncio.run(in_thread(_END + " RETURNING 1", ctx))
        return os.getpid()

    @app.job(name="hold_connection", max_retries=0)
    async def hold_connection(ctx: JobContext, seconds: float) -> int:
        """Keeps one of Soniq's own pool connections busy, as a job in a long transaction does."""
        await started(ctx)
        pool = await app.pool()
        async with pool.acquire() as conn:
            await conn.execute("SELECT pg_sleep($1)", seconds)
        await ended(ctx)
        return os.getpid()

    @app.job(name="poison", max_retries=2)
    async def poison(ctx: JobContext) -> None:
        await started(ctx)
        os._exit(3)  # the process dies mid-attempt, every time

    @app.job(name="chaos", max_retries=25)
    async def chaos(ctx: JobContext, n: int) -> int:
        await started(ctx)
        await asyncio.sleep(random.uniform(0, 0.02))
        await ended(ctx)
        return n

    @app.job(name="nap", max_retries=0)
    async def nap(seconds: float) -> None:
        """Touches no database itself: any failure around it is Soniq's."""
        await asyncio.sleep(seconds)

    @app.job(name="noop", max_retries=0)
    async def noop(n: int) -> None:
        return None

    return app


app = build()
