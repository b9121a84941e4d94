"""A Soniq app that worker subprocesses import in the core tests.

Each attempt is recorded in ``test_runs`` (job id, worker pid) so a test can check that every job
ran exactly once across processes.
"""

from __future__ import annotations

import os

import asyncpg

from soniq import JobContext, Soniq

app = Soniq(os.environ["SONIQ_DATABASE_URL"], poll_interval=0.5, lease_seconds=5)

_conn: asyncpg.Connection | None = None


async def _db() -> asyncpg.Connection:
    global _conn
    if _conn is None or _conn.is_closed():
        _conn = await asyncpg.connect(os.environ["SONIQ_DATABASE_URL"])
    return _conn


@app.job(name="core.record")
async def record(n: int, ctx: JobContext) -> int:
    conn = await _db()
    await conn.execute(
        "INSERT INTO test_runs (job_id, n, pid, worker_id) VALUES ($1, $2, $3, $4)",
        ctx.job_id, n, os.getpid(), ctx.worker_id,
    )
    return n


@app.job(name="core.fail", max_retries=1, retry_backoff=0.1)
async def fail() -> None:
    raise RuntimeError("always fails")
