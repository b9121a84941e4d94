"""What the telemetry libraries cost on their own, against what Soniq spends per job.

The instrumented drain's ratio to the plain one is bounded by the libraries, whatever Soniq's
layers do: each attempt is one recorded OpenTelemetry SDK span (Soniq's attributes and its link
to the enqueue, through a ``BatchSpanProcessor``) and one JSON log record at INFO (``job.done``:
stdlib ``logging`` to a file handler, its fields encoded by the stdlib ``json`` module with the
least a JSON formatter must do). This script times those library calls alone, in a loop with no
Soniq code, and a plain Soniq drain of no-op jobs (wall time and the worker's CPU per job),
then prints the best ratio an instrumented worker could reach if its own layers cost nothing.
``python -m bench``'s telemetry scenario subtracts the same floor from the measured cost to
give Soniq's own share. A worker runs its jobs on one thread, so it needs at least
``own + libraries`` CPU microseconds per job; the plain drain takes ``wall`` microseconds per
job (the database sets part of that pace). The ratio can be no better than
``wall / (own + libraries)``.

    .venv/bin/python -m bench.telemetry_floor [--jobs 20000] [--calls 20000]

(from the repository root; the database server as for ``python -m bench``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import AttributeValue

from bench import common
from bench.otel_overhead import CountingExporter
from soniq import Soniq

# What every LogRecord has; the rest are the fields a JSON formatter writes.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}


class BareJsonFormatter(logging.Formatter):
    """The least a JSON log line needs: the record's level, logger, message, time and fields
    in one object, through the stdlib encoder."""

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
        return json.dumps(data)


def _per_call_us(call: Callable[[], object], calls: int) -> float:
    """CPU microseconds per call (this process, every thread: the span processor's too)."""
    started = time.process_time()
    for _ in range(calls):
        call()
    return (time.process_time() - started) / calls * 1e6


def span_cost_us(calls: int) -> float:
    provider = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(CountingExporter(), max_queue_size=calls + 4096))
    tracer = provider.get_tracer("floor")
    with tracer.start_as_current_span("send job") as send:
        creation = send.get_span_context()
    parent = trace.set_span_in_context(trace.NonRecordingSpan(creation))
    # The attributes Soniq's attempt span carries (docs/tracing.md), with typical values.
    attributes: dict[str, AttributeValue] = {
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

    def one() -> None:
        span = tracer.start_span(
            "process bench.job",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=[Link(creation, {"soniq.link.type": "enqueue"})],
        )
        span.set_attribute("soniq.job.outcome", "done")
        span.end()

    cost = _per_call_us(one, calls)
    provider.shutdown()
    return cost


def log_record_cost_us(calls: int) -> float:
    path = os.path.join(tempfile.gettempdir(), f"soniq-floor-{os.getpid()}.log")
    handler = logging.FileHandler(path)
    handler.setFormatter(BareJsonFormatter())
    log = logging.getLogger("soniq.floor")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    # The fields of a job.done record (docs/logs.md).
    fields = {
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

    def one() -> None:
        # As the log layer does: no stack walk for the caller's file and line.
        log.handle(
            log.makeRecord(log.name, logging.INFO, __file__, 0, "Job done", (), None, "f", fields)
        )

    try:
        return _per_call_us(one, calls)
    finally:
        log.removeHandler(handler)
        handler.close()
        os.unlink(path)


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
    }
    print(json.dumps(result, indent=2))


def run(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per plain drain")
    parser.add_argument("--calls", type=int, default=20_000, help="library calls per timing")
    asyncio.run(main(parser.parse_args(argv)))


if __name__ == "__main__":
    run()
