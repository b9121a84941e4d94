"""Drain throughput with tracing on against off, as a ratio measured in one run.

Each repetition enqueues the same number of no-op jobs and times one worker draining them
(``run_once``). "on" has the tracing layer with a 100 % sampler and a BatchSpanProcessor whose
exporter does nothing, so the cost measured is Soniq's and the SDK's, not a network's; the
processor's queue is large enough that no span is dropped (dropping would flatter the figure),
and the number of spans exported is checked. Repetitions alternate off/on so drift on a shared
machine hits both alike; the ratio is of the medians. Enqueue is not timed.

    python -m bench.otel_overhead [--jobs 5000] [--reps 5] [--concurrency 20] [--job noop|query]

(from the repository root, like ``python -m bench``). Database: ``BENCH_DATABASE_URL``'s server,
else ``SONIQ_TEST_DATABASE_URL``'s, else postgresql://postgres@127.0.0.1:5432/postgres; a scratch
database is created there and dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from bench import common
from soniq import Soniq
from soniq_otel import OtelConfig


class CountingExporter(SpanExporter):
    """Exports nowhere; counts, so the run can show nothing was dropped."""

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.count += len(spans)
        return SpanExportResult.SUCCESS


def make_app(url: str, provider: SdkTracerProvider | None, job: str) -> Soniq:
    app = Soniq(url, poll_interval=0.2, pool_max_size=30)
    if provider is not None:
        app.instrument(otel=OtelConfig(tracer_provider=provider))

    if job == "noop":

        @app.job(name="bench.job")
        async def noop(n: int) -> None:
            return None

    else:
        # The smallest job that does something real: one query on the app's pool.

        @app.job(name="bench.job")
        async def query(n: int) -> int:
            pool = await app.pool()
            value: int = await pool.fetchval("SELECT $1::int + 1", n)
            return value

    return app


async def drain(app: Soniq, jobs: int, concurrency: int) -> tuple[float, float]:
    """Returns (jobs per second, CPU microseconds of this process per job). The app queues its
    own jobs, so each enqueue_many call of up to 1000 is traced as one send span."""
    took = await common.drain(app, "bench.job", jobs, concurrency, args=lambda i: {"n": i})
    return jobs / took.seconds, took.cpu_seconds / jobs * 1e6


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--job",
        choices=["noop", "query"],
        default="noop",
        help="noop: pure overhead, the worst case for the ratio; query: one SELECT per job",
    )
    args = parser.parse_args(argv)

    server = common.admin_url()
    url = await common.create_database(server, "otel")

    exporter = CountingExporter()
    provider = SdkTracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=4 * args.jobs + 4096))
    off, on = make_app(url, None, args.job), make_app(url, provider, args.job)
    rates: dict[str, list[float]] = {"off": [], "on": []}
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    try:
        await off.setup()
        await drain(off, min(args.jobs, 1000), args.concurrency)  # warm up both
        await drain(on, min(args.jobs, 1000), args.concurrency)
        provider.force_flush()
        exporter.count = 0
        for _ in range(args.reps):
            for label, app in (("off", off), ("on", on)):
                rate, cpu_per_job = await drain(app, args.jobs, args.concurrency)
                rates[label].append(rate)
                cpu[label].append(cpu_per_job)
        provider.force_flush()
    finally:
        await off.close()
        await on.close()
        await common.drop_database(server, url)

    # One process span per job, one send span per enqueue_many call of up to 1000.
    expected_spans = args.reps * (args.jobs + -(-args.jobs // 1000))
    median_off = statistics.median(rates["off"])
    median_on = statistics.median(rates["on"])
    result = {
        "job": args.job,
        "jobs": args.jobs,
        "reps": args.reps,
        "concurrency": args.concurrency,
        "off_jobs_per_s": [round(r) for r in rates["off"]],
        "on_jobs_per_s": [round(r) for r in rates["on"]],
        "median_off": round(median_off),
        "median_on": round(median_on),
        "ratio_on_off": round(median_on / median_off, 3),
        # Less sensitive to other load on the machine than wall-clock throughput.
        "cpu_us_per_job_off": round(statistics.median(cpu["off"]), 1),
        "cpu_us_per_job_on": round(statistics.median(cpu["on"]), 1),
        "spans_exported": exporter.count,
        "spans_expected": expected_spans,
    }
    print(json.dumps(result, indent=2))
    if exporter.count != expected_spans:
        print("spans were dropped or duplicated: the ratio is not trustworthy", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
