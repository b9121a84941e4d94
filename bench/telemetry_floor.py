"""What the telemetry libraries cost on their own, against what Soniq spends per job.

The instrumented drain's ratio to the plain one is bounded by the libraries, whatever Soniq's
layers do: each attempt is one recorded OpenTelemetry SDK span (Soniq's attributes, through a
``BatchSpanProcessor``) and one JSON log record at INFO (``job.done``: stdlib ``logging`` to a
file handler, its fields encoded by orjson, as Soniq's formatter encodes them, with the least a
JSON formatter must do). The bench's jobs are enqueued without tracing, as the drain's are, so
the span has no parent and no link; ``enqueue_traced=True`` gives the span a traced enqueue's
parent and link instead.

This module times those library calls two ways. Alone, in a loop with no Soniq code (the
"tight-loop floor"). And inside a real drain (:class:`FloorLayer`, the ``floor`` profile of
``python -m bench``'s telemetry scenario): a plain worker whose only telemetry is the same two
calls per attempt, made from one thin step, with the collector frozen at start as Soniq's
tracing layer freezes it. The drain's floor is what (c) subtracts: it is paid under the same
conditions as the instrumented drain (the worker loop, asyncpg, the event loop between
attempts, the span processor's thread), which a loop of library calls alone does not see.

    .venv/bin/python -m bench.telemetry_floor [--jobs 20000] [--calls 20000]

(from the repository root; the database server as for ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from contextvars import Token
from datetime import datetime, timezone
from typing import Any

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue

from bench import common
from bench.otel_overhead import CountingExporter
from soniq import AttemptContext, CallNext, Middleware, MiddlewareChain, Soniq, Worker

# What every LogRecord has; the rest are the fields a JSON formatter writes.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


class BareJsonFormatter(logging.Formatter):
    """The least a JSON log line needs: the record's level, logger, message, time and fields
    in one object, encoded by orjson, the encoder Soniq's own formatter uses (so the floor
    counts the library's cost, not the choice of library)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "timestamp": record.created,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = value
        return orjson.dumps(data).decode()


def _per_call_us(call: Callable[[], object], calls: int) -> float:
    """CPU microseconds per call (this process, every thread: the span processor's too)."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


# The attributes Soniq's attempt span carries (docs/tracing.md), with typical values.
SPAN_ATTRIBUTES: dict[str, AttributeValue] = {
    "messaging.system": "soniq",
    "messaging.operation.name": "process",
    "messaging.operation.type": "process",
    "messaging.destination.name": "default",
    "messaging.message.id": "0193b2c4-1234-7abc-8def-0123456789ab",
    "messaging.client.id": "host:1234:abcdef12",
    "soniq.job.name": "bench.job",
    "soniq.job.attempt": 1,
    "soniq.job.max_attempts": 4,
    "soniq.job.priority": 0,
    "soniq.job.queue_wait_seconds": 0.012,
}
# The fields of a job.done record (docs/logging.md).
RECORD_FIELDS: dict[str, Any] = {
    "event": "job.done",
    "job_id": "0193b2c4-1234-7abc-8def-0123456789ab",
    "job_name": "bench.job",
    "queue": "default",
    "attempt": 1,
    "max_attempts": 4,
    "queue_wait_ms": 12.345,
    "worker_id": "host:1234:abcdef12",
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "span_id": "b7ad6b7169203331",
    "duration_ms": 0.021,
    "outcome": "done",
}
# A fresh root, as Soniq's tracing layer gives an attempt whose job carries no trace context.
_ROOT = otel_context.Context()
# Profile (b)'s sampler: the attempt's span is recorded for a tenth of the jobs; the others get
# a non-recording span, still with ids for the records, still made current.
PRODUCTION_SAMPLER: Sampler = ParentBased(TraceIdRatioBased(0.1))


class LibraryCalls:
    """The library calls of one attempt of profile (a): :meth:`start` and :meth:`finish` (one
    recorded SDK span with Soniq's attributes, through a batch processor whose exporter only
    counts, current in between) and :meth:`record` (one ``job.done`` JSON record through
    ``logging`` to a file). With ``sampler=PRODUCTION_SAMPLER``, profile (b)'s: the same calls,
    the span recorded for a tenth of the attempts."""

    def __init__(
        self, calls: int, enqueue_traced: bool = False, sampler: Sampler = ALWAYS_ON
    ) -> None:
        self.provider = TracerProvider(sampler=sampler, shutdown_on_exit=False)
        self.exporter = CountingExporter()
        self.provider.add_span_processor(
            BatchSpanProcessor(self.exporter, max_queue_size=calls + 4096)
        )
        tracer = self.provider.get_tracer("floor")
        parent: otel_context.Context = _ROOT
        links: list[Link] | None = None
        if enqueue_traced:
            with tracer.start_as_current_span("send job") as send:
                creation = send.get_span_context()
            parent = trace.set_span_in_context(trace.NonRecordingSpan(creation))
            links = [Link(creation, {"soniq.link.type": "enqueue"})]

        def start() -> tuple[trace.Span, Token[otel_context.Context]]:
            # The span is current while the job runs: the job code's own records and spans
            # must see it (trace ids on every record), so (a) cannot skip these context calls.
            one = tracer.start_span(
                "process bench.job",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes=SPAN_ATTRIBUTES,
                links=links,
            )
            return one, otel_context.attach(trace.set_span_in_context(one, parent))

        def finish(state: tuple[trace.Span, Token[otel_context.Context]]) -> None:
            one, token = state
            otel_context.detach(token)
            one.set_attribute("soniq.job.outcome", "done")
            one.end()

        def span() -> None:
            finish(start())

        self.log_path = os.path.join(tempfile.gettempdir(), f"soniq-floor-{os.getpid()}.log")
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(BareJsonFormatter())
        log = self._log = logging.getLogger(f"soniq.floor.{id(self)}")
        log.addHandler(self._handler)
        log.setLevel(logging.INFO)
        log.propagate = False

        def record() -> None:
            # As the log layer does: no stack walk for the caller's file and line.
            log.handle(
                log.makeRecord(
                    log.name, logging.INFO, __file__, 0, "Job done", (), None, "f", RECORD_FIELDS
                )
            )

        self.start, self.finish, self.span, self.record = start, finish, span, record

    def both(self) -> None:
        """One attempt's calls in (a)'s order: the span started and made current, the record
        written inside it, the span's context restored and the span ended."""
        state = self.start()
        self.record()
        self.finish(state)

    def close(self) -> None:
        self.provider.shutdown()
        self._log.removeHandler(self._handler)
        self._handler.close()
        os.unlink(self.log_path)


def _timed(calls: int, pick: Callable[[LibraryCalls], Callable[[], None]], traced: bool) -> float:
    library = LibraryCalls(calls, traced)
    try:
        return _per_call_us(pick(library), calls)
    finally:
        library.close()


def span_cost_us(calls: int, enqueue_traced: bool = False) -> float:
    return _timed(calls, lambda lib: lib.span, enqueue_traced)


def log_record_cost_us(calls: int) -> float:
    return _timed(calls, lambda lib: lib.record, False)


def libraries_cost_us(calls: int) -> float:
    """A span and a record per call, as profile (a) needs per attempt: together they cost more
    than apart (measured 3-17 us more here: more live objects, colder caches), and that is
    the libraries' doing too."""
    return _timed(calls, lambda lib: lib.both, False)


class FloorLayer(Middleware):
    """The floor inside a drain: the same library calls per attempt, from one thin step
    around the job (the span started and made current before it; after it, the record, the
    context restored, the span ended; no fields gathered: the least any instrumentation could
    do). Like Soniq's tracing layer, it freezes the collector when the worker starts, so the
    two drains differ by Soniq's code alone, not by the collector's state. With
    ``sampler=PRODUCTION_SAMPLER`` it is profile (b)'s floor: the most (b) could reach with any
    instrumentation at all."""

    telemetry = True
    order = 10

    def __init__(self, calls: int, sampler: Sampler = ALWAYS_ON) -> None:
        self.library = LibraryCalls(calls, sampler=sampler)

    def compose_step(self, call_next: CallNext, chain: MiddlewareChain) -> CallNext:
        start, finish, record = self.library.start, self.library.finish, self.library.record

        async def floor(ctx: AttemptContext) -> Any:
            state = start()
            result = await call_next(ctx)
            record()
            finish(state)
            return result

        return floor

    async def startup(self, worker: Worker) -> None:
        gc.collect()
        gc.freeze()


async def chain_cost_us(instrumented: bool, calls: int) -> float:
    """CPU microseconds per attempt through Soniq's composed chain around an async no-op job,
    plain or with the full profile's layers (tracing at 100 % through a batch processor whose
    exporter only counts, Prometheus metrics, JSON logs at INFO to a file): a tight loop like
    the library timings above, so the difference less the floor is Soniq's own code, without
    the database, the worker loop, or the cache and collector effects of a whole drain."""
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from soniq.executor import JobExecutor
    from soniq.logs import JsonFormatter
    from soniq_otel import OtelConfig

    app = Soniq("postgresql://nobody@127.0.0.1:1/none")

    @app.job(name="bench.job")
    async def job(i: int) -> None:
        pass

    root = logging.getLogger()
    path = os.path.join(tempfile.gettempdir(), f"soniq-chain-{os.getpid()}.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    provider = SdkTracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(CountingExporter(), max_queue_size=10 * calls))
    level = root.level
    if instrumented:
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        app.instrument(otel=OtelConfig(tracer_provider=provider), prometheus=True, logs=True)
    spec = app.registry.spec("bench.job")
    call = app.middleware.job_call(JobExecutor(1))
    now = datetime.now(timezone.utc)
    best = float("inf")
    try:
        for _ in range(5):  # best of five: the floor, not the machine's noise
            contexts = [
                AttemptContext(
                    job_id=str(uuid.uuid4()),
                    job_name="bench.job",
                    queue="default",
                    attempt=1,
                    max_attempts=4,
                    priority=0,
                    args={"i": 0},
                    enqueued_at=now,
                    scheduled_at=now,
                    queue_wait_s=0.012,
                    worker_id="host:1234:abcdef12",
                    spec=spec,
                )
                for _ in range(calls)
            ]
            started = time.process_time()
            for ctx in contexts:
                await call(ctx)
            best = min(best, (time.process_time() - started) / calls * 1e6)
            provider.force_flush()
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
        os.unlink(path)
        provider.shutdown()
    return best


async def soniq_us(jobs: int, reps: int) -> tuple[float, float]:
    """Wall and CPU microseconds per no-op job of a plain worker (medians of ``reps`` drains)."""
    admin = common.admin_url()
    url = await common.create_database(admin, "floor")
    app = Soniq(url, pool_max_size=4)

    @app.job(name="bench.job")
    async def job(i: int) -> None:
        pass

    try:
        await app.setup()
        wall, cpu = [], []
        for _ in range(reps):
            result = await common.drain(app, "bench.job", jobs, 10, args=lambda i: {"i": i})
            wall.append(result.seconds / jobs * 1e6)
            cpu.append(result.cpu_seconds / jobs * 1e6)
        return statistics.median(wall), statistics.median(cpu)
    finally:
        await app.close()
        await common.drop_database(admin, url)


async def main(args: argparse.Namespace) -> None:
    wall, own = await soniq_us(args.jobs, 3)
    span = statistics.median(span_cost_us(args.calls) for _ in range(3))
    record = statistics.median(log_record_cost_us(args.calls) for _ in range(3))
    together = min(libraries_cost_us(args.calls) for _ in range(3))

    plain_chain = min([await chain_cost_us(False, args.calls // 4) for _ in range(3)])
    full_chain = min([await chain_cost_us(True, args.calls // 4) for _ in range(3)])

    def bound(libraries: float) -> float:
        return round(min(1.0, wall / (own + libraries)), 2)

    result = {
        "soniq_wall_us_per_job": round(wall, 1),
        "soniq_worker_cpu_us_per_job": round(own, 1),
        "sdk_span_cpu_us": round(span, 1),
        "json_log_record_cpu_us": round(record, 1),
        # Tracing alone (issue 4's ratio) and every layer (issue 20's profile (a): one span and
        # one INFO record per attempt), if Soniq's own layers were free; metrics, which are
        # Soniq's own code (no library call per attempt), are left out.
        "best_ratio_tracing_on_off": bound(span),
        "best_ratio_instrumented": bound(span + record),
        # The full profile's layers in a tight loop, less the plain chain and the floor.
        "chain_cpu_us_plain": round(plain_chain, 1),
        "chain_cpu_us_full": round(full_chain, 1),
        "span_and_record_cpu_us": round(together, 1),
        "soniq_own_us_in_chain": round(full_chain - plain_chain - together, 1),
    }
    print(json.dumps(result, indent=2))


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per plain drain")
    parser.add_argument("--calls", type=int, default=20_000, help="library calls per timing")
    asyncio.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    run()
