"""Soniq through its public API, plus a server-side bulk loader for the scale check."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from soniq import Soniq

JOB_NAME = "bench.job"


def make_app(url: str, job: Callable[[dict[str, Any]], Awaitable[None]] | None = None) -> Soniq:
    app = Soniq(url)

    @app.job(name=JOB_NAME, max_retries=3)
    async def bench_job(i: int = 0, t: float = 0.0) -> None:
        if job is not None:
            await job({"i": i, "t": t})

    return app


class SoniqSystem:
    name = "soniq"

    def __init__(self, url: str) -> None:
        self.url = url
        self.app = make_app(url)
        self._bulk_calls = 0

    async def open(self) -> None:
        await self.app.pool()

    async def close(self) -> None:
        await self.app.close()

    async def install(self) -> None:
        await self.app.setup()

    async def reset(self) -> None:
        pool = await self.app.pool()
        await pool.execute("TRUNCATE soniq_jobs, soniq_workers")

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self.app.enqueue(JOB_NAME, **payload)

    async def enqueue_batch(self, payloads: list[dict[str, Any]]) -> None:
        await self.app.enqueue_many(JOB_NAME, payloads)

    async def remaining(self) -> int:
        pool = await self.app.pool()
        return int(
            await pool.fetchval(
                "SELECT count(*) FROM soniq_jobs WHERE status NOT IN ('done', 'dead_letter')"
            )
        )

    async def bulk_rows(self, n: int, status: str = "queued") -> None:
        """Write n rows server-side (scale check set-up, not a measured path)."""
        pool = await self.app.pool()
        finished = "now()" if status != "queued" else "NULL"
        await pool.execute(
            f"""
            INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, attempts,
                                   scheduled_at, created_at, finished_at)
            SELECT (ms.hex || '7' || lpad(to_hex($4::int), 3, '0') || '8'
                    || lpad(to_hex(g), 15, '0'))::uuid,
                   $1, 'default', jsonb_build_object('i', g), $2::soniq_job_status, 4,
                   CASE WHEN $2::soniq_job_status = 'queued' THEN 0 ELSE 1 END,
                   now() - interval '1 hour', now() - interval '1 hour', {finished}
            FROM generate_series(1, $3) AS g,
                 -- Time-ordered ids, like the UUIDv7 ones Soniq's enqueue writes.
                 (SELECT lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint),
                              12, '0') AS hex) AS ms
            """,
            JOB_NAME,
            status,
            n,
            self._bulk_calls % 4096,  # keeps ids of two calls in one millisecond apart
        )
        self._bulk_calls += 1

    async def settle(self) -> None:
        """After a bulk load: what autovacuum would have done by the time a real backlog is
        drained, and its dirty pages written, so the drain after it is not charged for them."""
        pool = await self.app.pool()
        await pool.execute("VACUUM ANALYZE soniq_jobs")
        await pool.execute("CHECKPOINT")


class Telemetry:
    """Every telemetry layer on: tracing through a batch span processor whose exporter only
    counts (its queue is large enough that no span is dropped: dropping would flatter the
    figure), Prometheus metrics, and JSON logs at INFO written to a file. ``full`` samples every
    trace; ``production`` samples parent-based at 10 % (the bench's jobs carry no parent, so a
    tenth of the attempts are recorded). ``floor`` is none of Soniq's layers, only the library
    calls of ``full`` (a span and a JSON record per attempt: ``bench.telemetry_floor``);
    ``floor-production`` the same calls with ``production``'s sampler."""

    def __init__(self, profile: str = "full") -> None:
        self.profile = profile
        self.exporter: Any = None
        self.provider: Any = None
        self.floor: Any = None
        self.log_file = os.path.join(tempfile.gettempdir(), f"soniq-bench-{os.getpid()}.log")

    def install(self, app: Soniq) -> str | None:
        """Returns why it is not available, or None."""
        if self.profile in ("floor", "floor-production"):
            from bench.telemetry_floor import PRODUCTION_SAMPLER, FloorLayer

            if self.profile == "floor":
                self.floor = FloorLayer(1_000_000)
            else:
                self.floor = FloorLayer(1_000_000, sampler=PRODUCTION_SAMPLER)
            app.middleware.add_builtin(self.floor)
            return None
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON

            from bench.otel_overhead import CountingExporter
            from bench.telemetry_floor import PRODUCTION_SAMPLER
            from soniq.logs import JsonFormatter
            from soniq_otel import OtelConfig

            sampler = ALWAYS_ON if self.profile == "full" else PRODUCTION_SAMPLER
            self.provider = TracerProvider(sampler=sampler)
            self.exporter = CountingExporter()
            self.provider.add_span_processor(
                BatchSpanProcessor(self.exporter, max_queue_size=1_000_000)
            )
            handler = logging.FileHandler(self.log_file)
            handler.setFormatter(JsonFormatter())
            root = logging.getLogger()
            root.addHandler(handler)
            root.setLevel(logging.INFO)
            app.instrument(
                otel=OtelConfig(tracer_provider=self.provider), prometheus=True, logs=True
            )
        except (ImportError, NotImplementedError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def finish(self) -> dict[str, Any]:
        """Flush the spans; what was exported and logged, so the run can show nothing was
        dropped."""
        if self.floor is not None:
            library = self.floor.library
            library.provider.force_flush()
            with open(library.log_path) as f:
                lines = sum(1 for _ in f)
            count = library.exporter.count
            library.close()
            return {"spans": count, "log_lines": lines}
        self.provider.force_flush()
        self.provider.shutdown()
        with open(self.log_file) as f:
            lines = sum(1 for _ in f)
        os.unlink(self.log_file)
        return {"spans": self.exporter.count, "log_lines": lines}
