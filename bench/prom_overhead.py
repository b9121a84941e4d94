"""Drain throughput with Prometheus metrics on against off, as a ratio measured in one run.

Two apps share one scratch database: one plain, one with ``app.instrument(prometheus=True)``.
Each repetition enqueues the same number of no-op jobs and times a ``run_once`` worker
draining them; the two variants alternate (ABBA) so that drift in the machine's load falls on
both. No-op jobs make this the worst case: the metrics' cost is compared with the queue's
bare per-job cost, not hidden behind real work.

    .venv/bin/python -m bench.prom_overhead [--jobs 2000] [--reps 10] [--concurrency 10]

(from the repository root, like ``python -m bench``). Database: ``BENCH_DATABASE_URL``'s server,
else ``SONIQ_TEST_DATABASE_URL``'s, else 127.0.0.1:5432 (user postgres); a database is created
for the run and dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench import common
from soniq import Soniq


def make_app(url: str, metrics: bool) -> Soniq:
    app = Soniq(url, pool_max_size=4)

    @app.job(name="noop")
    async def noop() -> None:
        pass

    if metrics:
        app.instrument(prometheus=True)
    return app


async def drain(app: Soniq, jobs: int, concurrency: int) -> tuple[float, float]:
    """One drain of ``jobs`` fresh jobs: (jobs per second, jobs per CPU-second of this
    process). The second figure ignores time spent waiting for PostgreSQL or for a CPU that
    another process holds: it is the throughput if the database were free, the case where the
    layer's cost weighs most."""
    took = await common.drain(app, "noop", jobs, concurrency, args=lambda i: {})
    return jobs / took.seconds, jobs / took.cpu_seconds


async def main(jobs: int, reps: int, concurrency: int) -> None:
    admin = common.admin_url()
    url = await common.create_database(admin, "prom")
    plain, metered = make_app(url, False), make_app(url, True)
    try:
        await plain.setup()
        await drain(plain, jobs // 5, concurrency)  # warm up: pools, plans, caches
        await drain(metered, jobs // 5, concurrency)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        cpu_rates: dict[str, list[float]] = {"off": [], "on": []}
        for rep in range(reps):
            order = ("off", "on") if rep % 2 == 0 else ("on", "off")
            for variant in order:
                app = metered if variant == "on" else plain
                rate, cpu_rate = await drain(app, jobs, concurrency)
                rates[variant].append(rate)
                cpu_rates[variant].append(cpu_rate)
    finally:
        await plain.close()
        await metered.close()
        await common.drop_database(admin, url)

    # Each repetition's two drains ran back to back, so their ratio is the least disturbed by
    # other load on the machine; the median of those ratios is the headline figure.
    pairs = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    cpu_pairs = [on / off for on, off in zip(cpu_rates["on"], cpu_rates["off"], strict=True)]
    cost = await asyncio.to_thread(_layer_cost_us)
    print(f"jobs per drain {jobs}, repetitions {reps}, concurrency {concurrency}")
    for variant in ("off", "on"):
        each = ", ".join(f"{r:.0f}" for r in rates[variant])
        print(
            f"metrics {variant:<3}: median {statistics.median(rates[variant]):7.0f} jobs/s"
            f"  ({each})"
        )
    print(f"per-repetition ratios on/off: {', '.join(f'{p:.3f}' for p in pairs)}")
    print(
        f"drain throughput ratio on/off (median of per-repetition ratios): "
        f"{statistics.median(pairs):.3f}"
    )
    for variant in ("off", "on"):
        print(
            f"metrics {variant:<3}: median {statistics.median(cpu_rates[variant]):7.0f} "
            f"jobs per CPU-second of the worker process"
        )
    print(f"per-repetition CPU ratios on/off: {', '.join(f'{p:.3f}' for p in cpu_pairs)}")
    print(
        f"CPU-bound ratio on/off (median of per-repetition ratios): "
        f"{statistics.median(cpu_pairs):.3f}"
    )
    print(f"metrics layer cost per attempt, no database: {cost:.1f} us")


def _layer_cost_us(attempts: int = 50_000) -> float:
    """What the layer adds to one attempt, timed on a chain around a do-nothing job: the part
    of the ratio above that is the metrics and not the database."""
    from datetime import datetime, timezone

    from soniq import AttemptContext

    async def per_attempt(metrics: bool) -> float:
        app = make_app("postgresql://unused@127.0.0.1/unused", metrics)
        spec = app.registry.spec("noop")

        async def job(ctx: AttemptContext) -> None:
            ctx.duration_ms = 0.01

        call = app.middleware.job_call(job)
        now = datetime.now(timezone.utc)
        contexts = [
            AttemptContext(
                job_id=str(i),
                job_name="noop",
                queue="default",
                attempt=1,
                max_attempts=4,
                priority=0,
                args={},
                enqueued_at=now,
                scheduled_at=now,
                queue_wait_s=0.01,
                worker_id="bench",
                spec=spec,
            )
            for i in range(attempts)
        ]
        began = time.perf_counter()
        for ctx in contexts:
            await call(ctx)
        return (time.perf_counter() - began) / attempts * 1e6

    costs = [asyncio.run(per_attempt(metrics)) for metrics in (False, True, False, True)]
    return (costs[1] + costs[3] - costs[0] - costs[2]) / 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=10)
    options = parser.parse_args()
    asyncio.run(main(options.jobs, options.reps, options.concurrency))
