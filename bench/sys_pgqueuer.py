"""pgqueuer 1.6.0 through its public API (``Queries`` for enqueue, ``QueueManager`` to drain).

Dequeue is batched by ``QueueManager.run(batch_size=...)``. Several configurations are
measured; the table's pgqueuer figure is the best of them, whatever its concurrency:

- ``b5c10``: batch_size=5, max_concurrent_tasks=10: pgqueuer at concurrency 10, as the issue's
  set-up asks (it requires max_concurrent_tasks >= 2 * batch_size, so 5 is its largest batch);
- ``b10``: batch_size=10 (its default, and its own benchmark's setting), no task cap;
- ``b100``, ``b500``: larger batches, no task cap, so up to that many no-op jobs in flight at
  once. A batch sweep (25, 50, 100, 200, 500) found each larger batch a little faster; 500 was
  the best measured.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench"

CONFIGS: dict[str, dict[str, Any]] = {
    "b5c10": {"batch_size": 5, "max_concurrent_tasks": 10},
    "b10": {"batch_size": 10, "max_concurrent_tasks": None},
    "b100": {"batch_size": 100, "max_concurrent_tasks": None},
    "b500": {"batch_size": 500, "max_concurrent_tasks": None},
}


class PgQueuerSystem:
    name = "pgqueuer"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection[Any] | None = None
        self.queries: Queries | None = None

    async def open(self) -> None:
        self.conn = await asyncpg.connect(self.url)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()

    async def install(self) -> None:
        assert self.queries is not None
        await self.queries.install()

    async def reset(self) -> None:
        assert self.conn is not None
        await self.conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        assert self.queries is not None
        await self.queries.enqueue(ENTRYPOINT, json.dumps(payload).encode())

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        assert self.queries is not None
        n = len(payloads)
        await self.queries.enqueue(
            [ENTRYPOINT] * n, [json.dumps(p).encode() for p in payloads], [0] * n
        )

    async def remaining(self) -> int:
        assert self.conn is not None
        return int(await self.conn.fetchval("SELECT count(*) FROM pgqueuer"))


class PgQueuerWorker:
    def __init__(
        self, url: str, job: Callable[[dict[str, Any]], Awaitable[None]], config: str
    ) -> None:
        self.url = url
        self.job = job
        self.config = CONFIGS[config]
        self.qm: QueueManager | None = None
        self.conn: asyncpg.Connection[Any] | None = None

    async def prepare(self) -> None:
        self.conn = await asyncpg.connect(self.url)
        self.qm = QueueManager(Queries(AsyncpgDriver(self.conn)))
        run_job = self.job

        @self.qm.entrypoint(ENTRYPOINT)
        async def bench(job: Job) -> None:
            await run_job(json.loads(job.payload or b"{}"))

    async def _run(self, mode: QueueExecutionMode) -> None:
        assert self.qm is not None and self.conn is not None
        try:
            await self.qm.run(
                dequeue_timeout=timedelta(seconds=1),
                batch_size=self.config["batch_size"],
                max_concurrent_tasks=self.config["max_concurrent_tasks"],
                mode=mode,
            )
        finally:
            await self.conn.close()

    async def drain(self) -> None:
        await self._run(QueueExecutionMode.drain)

    async def serve(self) -> None:
        await self._run(QueueExecutionMode.continuous)

    def stop(self) -> None:
        assert self.qm is not None
        self.qm.shutdown.set()
