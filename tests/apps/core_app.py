"""A Soniq app that worker subprocesses import in the core tests.

Each attempt is recorded in ``test_runs`` (job id, worker pid) so a test can check that every job
ran exactly once across processes.
"""

from __future__ import annotations

import os

import asyncpg

from soniq import JobContext, Soniq

# The URL comes from SONIQ_DATABASE_URL, set by the test that starts the process.
app = Soniq(poll_interval=0.5, lease_seconds=5)

_pool: asyncpg.Pool | None = None


async def _db() -> asyncpg.Pool:
    global _pool
    if _pool is None:
        _pool = await asyncpg.create_pool(os.environ["SONIQ_DATABASE_URL"], min_size=1, max_size=4)
    return _pool


@app.job(name="core.record")
async def record(n: int, ctx: JobContext) -> int:
    pool = await _db()
    await pool.execute(
        "INSERT INTO test_runs (job_id, n, pid, worker_id) VALUES ($1, $2, $3, $4)",
        ctx.job_id,
        n,
        os.getpid(),
        ctx.worker_id,
    )
    return n


@app.job(name="core.fail", max_retries=1, retry_backoff=0.1)
async def fail() -> None:
    raise RuntimeError("always fails")
