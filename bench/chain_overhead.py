"""What user hooks cost: drain throughput with three no-op hooks against none, in one run.

    .venv/bin/python -m bench.chain_overhead [--jobs 2000] [--repeats 21] [--hooks-per-event 1]

(from the repository root, like ``python -m bench``).

One worker (concurrency 10, ``run_once``) drains N queued no-op ``async def`` jobs; the clock
covers the worker's whole ``run()``. Two apps on the same scratch database differ only in their
hooks: ``plain`` has none, ``hooked`` has no-op async ``before_job``, ``after_job`` and
``on_error`` hooks (``--hooks-per-event`` of each). Repetitions alternate the order (AB, BA,
...) after one discarded warm-up pair, so drift on a shared machine falls on both sides; the
result is the ratio of the medians, and the median of the per-pair ratios. The target is a cost
under 5 %. Wall-clock throughput on a shared machine swings by more than that between pairs, so
the script also prints the worker process's CPU time per job, which other load moves far less:
what hooks cost is CPU in that process.

``--hooks-per-event 0`` makes both apps identical: an A/A run, which shows the bias and noise
of the method itself on your machine.

It also times the composed chain alone (no database) for the same two setups, which says what
the hooks add per job in microseconds.

The database: ``BENCH_DATABASE_URL``, else ``SONIQ_TEST_DATABASE_URL``, else
postgresql://postgres@127.0.0.1:5432/postgres; a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from bench import common
from soniq import AttemptContext, Soniq
from soniq.executor import JobExecutor

JOB_NAME = "bench.noop"


def make_app(url: str, hooks_per_event: int) -> Soniq:
    app = Soniq(url, poll_interval=1.0)

    @app.job(name=JOB_NAME)
    async def noop(i: int) -> None:
        return None

    for _ in range(hooks_per_event):

        @app.before_job
        async def before(job_name: str, job_id: str, attempt: int) -> None:
            return None

        @app.after_job
        async def after(job_name: str, job_id: str, duration_ms: float) -> None:
            return None

        @app.on_error
        async def error(job_name: str, job_id: str, error: str, attempt: int) -> None:
            return None

    return app


async def drain(app: Soniq, loader: Soniq, jobs: int, concurrency: int) -> tuple[float, float]:
    """Jobs per second, and this process's CPU microseconds per job (what the hooks add is CPU
    here). Each drain starts without garbage left from queueing or the last drain."""
    took = await common.drain(
        app,
        JOB_NAME,
        jobs,
        concurrency,
        args=lambda i: {"i": i},
        loader=loader,
        collect_garbage=True,
    )
    return jobs / took.seconds, took.cpu_seconds / jobs * 1e6


async def chain_cost_us(app: Soniq, calls: int) -> float:
    """Microseconds per attempt through the composed chain around an async no-op job."""
    spec = app.registry.spec(JOB_NAME)
    call = app.middleware.job_call(JobExecutor(1))
    now = datetime.now(timezone.utc)
    best = float("inf")
    for _ in range(5):  # best of five: the floor, not the machine's noise
        contexts = [
            AttemptContext(
                job_id=str(uuid.uuid4()),
                job_name=JOB_NAME,
                queue="default",
                attempt=1,
                max_attempts=4,
                priority=0,
                args={"i": 0},
                enqueued_at=now,
                scheduled_at=now,
                queue_wait_s=0.0,
                worker_id="bench",
                spec=spec,
            )
            for _ in range(calls)
        ]
        started = time.perf_counter()
        for ctx in contexts:
            await call(ctx)
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


async def main(args: argparse.Namespace) -> None:
    admin = common.admin_url()
    url = await common.create_database(admin, "chain")
    plain = make_app(url, 0)
    hooked = make_app(url, args.hooks_per_event)
    # A third app queues the jobs, so neither measured app's pool does extra work (an A/A run,
    # --hooks-per-event 0, showed a bias against the app that was not also the loader).
    loader = make_app(url, 0)
    try:
        await loader.setup()
        rates: dict[str, list[float]] = {"plain": [], "hooked": []}
        cpus: dict[str, list[float]] = {"plain": [], "hooked": []}
        pairs: list[float] = []
        apps = {"plain": plain, "hooked": hooked}
        for rep in range(args.repeats + 1):
            order = ("plain", "hooked") if rep % 2 == 0 else ("hooked", "plain")
            got = {v: await drain(apps[v], loader, args.jobs, args.concurrency) for v in order}
            if rep == 0:
                continue  # warm-up: pools, caches, plans
            for variant, (rate, cpu) in got.items():
                rates[variant].append(rate)
                cpus[variant].append(cpu)
            pairs.append(got["hooked"][0] / got["plain"][0])
            print(
                f"rep {rep:2d}: plain {got['plain'][0]:6.0f} jobs/s {got['plain'][1]:5.0f} us "
                f"cpu/job   hooked {got['hooked'][0]:6.0f} jobs/s {got['hooked'][1]:5.0f} us "
                f"cpu/job   ratio {pairs[-1]:.3f}",
                flush=True,
            )
        plain_rate = statistics.median(rates["plain"])
        hooked_rate = statistics.median(rates["hooked"])
        ratio = hooked_rate / plain_rate
        pair_ratio = statistics.median(pairs)
        hooks = 3 * args.hooks_per_event
        print()
        print(
            f"jobs per drain {args.jobs}, concurrency {args.concurrency}, "
            f"{args.repeats} interleaved repetitions, {hooks} no-op hooks in 'hooked'"
        )
        print(
            f"median drain throughput: no hooks {plain_rate:.0f} jobs/s, "
            f"{hooks} hooks {hooked_rate:.0f} jobs/s"
        )
        print(f"ratio (hooked / plain) of medians: {ratio:.3f}  -> cost {100 * (1 - ratio):+.1f} %")
        q1, _, q3 = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else (pair_ratio,) * 3
        print(
            f"median of per-pair ratios:        {pair_ratio:.3f}  -> cost "
            f"{100 * (1 - pair_ratio):+.1f} %  (quartiles {q1:.3f} .. {q3:.3f}: the noise)"
        )

        plain_cpu = statistics.median(cpus["plain"])
        hooked_cpu = statistics.median(cpus["hooked"])
        print(
            f"median worker-process CPU per job: no hooks {plain_cpu:.0f} us, {hooks} hooks "
            f"{hooked_cpu:.0f} us -> cost {100 * (hooked_cpu / plain_cpu - 1):+.1f} %"
        )

        plain_us = await chain_cost_us(plain, args.chain_calls)
        hooked_us = await chain_cost_us(hooked, args.chain_calls)
        per_job_us = 1e6 / plain_rate
        added = hooked_us - plain_us
        print(
            f"chain alone per attempt: no hooks {plain_us:.2f} us, {hooks} hooks "
            f"{hooked_us:.2f} us; the hooks add {added:.2f} us = "
            f"{100 * added / per_job_us:.2f} % of a drained job's {per_job_us:.0f} us"
        )
        wall_cost, cpu_cost = 1 - pair_ratio, hooked_cpu / plain_cpu - 1
        spread = (q3 - q1) / 2
        print(
            f"target, cost under 5 %: drain throughput {100 * wall_cost:+.1f} % "
            f"({'within' if wall_cost < 0.05 else 'OVER'}"
            f"{'; noise larger than the target, rerun on a quiet machine' if spread > 0.05 else ''}"
            f"), worker CPU per job {100 * cpu_cost:+.1f} % "
            f"({'within' if cpu_cost < 0.05 else 'OVER'})"
        )
    finally:
        await plain.close()
        await hooked.close()
        await loader.close()
        await common.drop_database(admin, url)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain")
    parser.add_argument("--repeats", type=int, default=21, help="measured pairs (after warm-up)")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument(
        "--hooks-per-event",
        type=int,
        default=1,
        help="no-op hooks on each of before_job, after_job, on_error",
    )
    parser.add_argument(
        "--chain-calls", type=int, default=20000, help="attempts per timing of the chain alone"
    )
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> Any:
    return asyncio.run(main(parse_args(argv)))


if __name__ == "__main__":
    run()
