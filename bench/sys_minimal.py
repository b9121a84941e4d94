"""The reference: a minimal hand-written asyncpg queue.

One table, one partial index, a statement-level trigger that wakes listeners. Enqueue is one
INSERT per job (or one INSERT ... SELECT FROM unnest per batch); the worker records the jobs
it finished and claims the next 100 rows in one statement (FOR UPDATE SKIP LOCKED), then runs
them ten at a time. No retries, no leases, no recovery: it is the floor of what any queue on
this server has to pay, not a queue anyone should use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

SCHEMA = """
CREATE TABLE mq_jobs (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload    jsonb NOT NULL,
    status     text NOT NULL DEFAULT 'queued',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mq_jobs_ready ON mq_jobs (id) WHERE status = 'queued';
CREATE FUNCTION mq_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('mq_jobs', ''); RETURN NULL; END $$;
CREATE TRIGGER mq_jobs_notify AFTER INSERT ON mq_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION mq_notify();
"""

INSERT_ONE = "INSERT INTO mq_jobs (payload) VALUES ($1::jsonb)"
INSERT_MANY = "INSERT INTO mq_jobs (payload) SELECT p::jsonb FROM unnest($1::text[]) AS p"

# The claimed rows are updated by address (ctid): they are locked, so it cannot change, and a
# join on id lets the planner hash-join a scan of the whole table once 100 rows are claimed.
FINISH_AND_CLAIM = """
WITH fin AS (
    UPDATE mq_jobs SET status = 'done' WHERE id = ANY($1::bigint[])
),
picked AS (
    SELECT ctid FROM mq_jobs WHERE status = 'queued' ORDER BY id LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE mq_jobs AS j SET status = 'processing' FROM picked WHERE j.ctid = picked.ctid
RETURNING j.id, j.payload::text
"""

BATCH = 100
RUN_AT_ONCE = 10

Job = Callable[[dict[str, Any]], Awaitable[None]]


class Minimal:
    name = "minimal"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection[Any] | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.url)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def install(self) -> None:
        assert self.conn is not None
        await self.conn.execute(SCHEMA)

    async def reset(self) -> None:
        assert self.conn is not None
        await self.conn.execute("TRUNCATE mq_jobs")

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        assert self.conn is not None
        await self.conn.execute(INSERT_ONE, json.dumps(payload))

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        assert self.conn is not None
        await self.conn.execute(INSERT_MANY, [json.dumps(p) for p in payloads])

    async def remaining(self) -> int:
        assert self.conn is not None
        return int(await self.conn.fetchval("SELECT count(*) FROM mq_jobs WHERE status <> 'done'"))


class MinimalWorker:
    """Claim 100, run them ten at a time, report them done with the next claim."""

    def __init__(self, url: str, job: Job) -> None:
        self.url = url
        self.job = job
        self._wake = asyncio.Event()
        self._stopping = False

    async def _drain_once(self, conn: asyncpg.Connection[Any], done: list[int]) -> int:
        """Claim-and-run until nothing is ready; returns jobs run."""
        ran = 0
        while True:
            rows = await conn.fetch(FINISH_AND_CLAIM, done, BATCH)
            done = []
            if not rows:
                return ran
            for start in range(0, len(rows), RUN_AT_ONCE):
                chunk = rows[start : start + RUN_AT_ONCE]
                await asyncio.gather(*(self.job(json.loads(r[1])) for r in chunk))
            done = [r[0] for r in rows]
            ran += len(rows)

    async def drain(self) -> int:
        conn = await asyncpg.connect(self.url)
        try:
            return await self._drain_once(conn, [])
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def serve(self) -> None:
        """Run until stopped, woken by NOTIFY (with a one-second poll as a fallback)."""
        conn = await asyncpg.connect(self.url)
        listen = await asyncpg.connect(self.url)
        await listen.add_listener("mq_jobs", lambda *_: self._wake.set())
        try:
            while not self._stopping:
                self._wake.clear()
                await self._drain_once(conn, [])
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
        finally:
            await listen.close()
            await conn.close()
