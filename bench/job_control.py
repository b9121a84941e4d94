"""Issue 16, point 8: what job control costs, in one run.

    git archive main | tar -x -C /tmp/soniq-base    # the code before, as a plain tree
    python -m bench.job_control --base /tmp/soniq-base [--jobs 5000] [--reps 5]

1. The plain drain: one worker process (concurrency 10) draining ``--jobs`` no-op jobs, the
   code before (``--base``, its own database and schema) and this tree, interleaved rep by
   rep so that load on the machine hurts both alike; a third variant drains with an
   unrelated queue paused (the controlled claim). Medians and ratios.
2. A limited queue: limit 4, jobs that sleep 50 ms, two worker processes at concurrency 10:
   the limit allows 80 jobs/s; the figure is the share of that reached. Each slot a job
   leaves costs one claim round trip before the next job starts (a limited queue is never
   claimed ahead), so the share falls as round trips slow against the job's own time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from bench.common import admin_url, create_database, drop_database

HERE = Path(__file__).resolve().parents[1]

# The worker: the same script for both trees (PYTHONPATH picks the code). It prints READY,
# waits for GO on stdin, then drains (run_once) or serves until SIGTERM.
CHILD = r"""
import asyncio, sys, time
from soniq import Soniq

async def main(url, mode, concurrency):
    app = Soniq(url, poll_interval=0.2)

    @app.job(name="bench.job", queue="default")
    async def job(i: int = 0, ms: float = 0.0) -> None:
        if ms:
            await asyncio.sleep(ms / 1000)

    app.job(name="bench.limited", queue="limited")(job)
    await app.pool()
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    started, cpu = time.perf_counter(), time.process_time()
    if mode == "enqueue":  # concurrency is the number of jobs here, one enqueue each
        for i in range(concurrency):
            await app.enqueue("bench.job", i=i)
    else:
        await app.run_worker(concurrency, run_once=(mode == "drain"),
                             install_signal_handlers=(mode != "drain"))
    print("RESULT", time.perf_counter() - started, time.process_time() - cpu, flush=True)
    await app.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


async def start(tree: Path, url: str, mode: str, concurrency: int) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        mode,
        str(concurrency),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        cwd=tree,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"READY":
        raise RuntimeError(f"worker from {tree} did not start: {line!r}")
    return proc


def go(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.write(b"GO\n")


async def setup(tree: Path, url: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree}"}
    code = "import asyncio,sys; from soniq import Soniq; asyncio.run(Soniq(sys.argv[1]).setup())"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, url, env=env)
    if await proc.wait():
        raise RuntimeError(f"setup from {tree} failed")


async def load(url: str, n: int, queue: str = "default", ms: float = 0.0) -> None:
    """Queue n jobs with plain SQL (the same rows either schema takes), then ANALYZE."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE soniq_jobs, soniq_workers")
        name = "bench.job" if queue == "default" else "bench.limited"
        await conn.execute(
            """INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts)
               SELECT gen_random_uuid(), $1, $2, jsonb_build_object('i', g, 'ms', $4::float8), 4
               FROM generate_series(1, $3) AS g""",
            name,
            queue,
            n,
            ms,
        )
        await conn.execute("ANALYZE soniq_jobs")
    finally:
        await conn.close()


async def drain_once(tree: Path, url: str, n: int) -> tuple[float, float]:
    """Jobs per second, and the worker process's CPU microseconds per job (which the load of
    other processes on the machine moves far less than the wall clock)."""
    await load(url, n)
    proc = await start(tree, url, "drain", 10)
    go(proc)
    assert proc.stdout is not None
    out = (await asyncio.wait_for(proc.stdout.read(), 600)).decode()
    await proc.wait()
    seconds, cpu = (float(x) for x in out.split("RESULT", 1)[1].split())
    return n / seconds, cpu * 1e6 / n


async def enqueue_once(tree: Path, url: str, n: int) -> tuple[float, float]:
    """Plain enqueues per second, one at a time, and the producer's CPU microseconds each."""
    conn = await asyncpg.connect(url)
    await conn.execute("TRUNCATE soniq_jobs")
    await conn.close()
    proc = await start(tree, url, "enqueue", n)
    go(proc)
    assert proc.stdout is not None
    out = (await asyncio.wait_for(proc.stdout.read(), 600)).decode()
    await proc.wait()
    seconds, cpu = (float(x) for x in out.split("RESULT", 1)[1].split())
    return n / seconds, cpu * 1e6 / n


async def limited_once(tree: Path, url: str, n: int, limit: int, ms: float) -> float:
    await load(url, n, queue="limited", ms=ms)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE soniq_queues")
        await conn.execute(
            "INSERT INTO soniq_queues (name, concurrency) VALUES ('limited', $1)", limit
        )
        procs = [await start(tree, url, "serve", 10) for _ in range(2)]
        started = time.perf_counter()
        for p in procs:
            go(p)
        # Polled: the end is a state of the table, and 10 ms is small against the run.
        while await conn.fetchval("SELECT count(*) FROM soniq_jobs WHERE status <> 'done'"):  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
        for p in procs:
            p.terminate()
        for p in procs:
            await p.wait()
    finally:
        await conn.close()
    return n / elapsed


async def amain(opts: argparse.Namespace, base: Path, here: Path) -> None:
    admin = admin_url()
    url_base = await create_database(admin, "jc_base")
    url_here = await create_database(admin, "jc_here")
    url_paused = await create_database(admin, "jc_paused")
    try:
        await setup(base, url_base)
        await setup(here, url_here)
        await setup(here, url_paused)
        conn = await asyncpg.connect(url_paused)
        await conn.execute("INSERT INTO soniq_queues (name, paused) VALUES ('elsewhere', true)")
        await conn.close()
        rates: dict[str, list[float]] = {"before": [], "after": [], "after, a queue paused": []}
        cpus: dict[str, list[float]] = {k: [] for k in rates}
        for rep in range(opts.reps):
            runs = [
                ("before", base, url_base),
                ("after", here, url_here),
                ("after, a queue paused", here, url_paused),
            ]
            runs = runs[rep % 3 :] + runs[: rep % 3]
            for label, tree, url in runs:
                rate, cpu = await drain_once(tree, url, opts.jobs)
                rates[label].append(rate)
                cpus[label].append(cpu)
            print(
                f"rep {rep + 1}: "
                + ", ".join(f"{k} {v[-1]:,.0f}/s {cpus[k][-1]:.0f}us" for k, v in rates.items())
            )
        before = statistics.median(rates["before"])
        cpu_before = statistics.median(cpus["before"])
        print(f"\nPlain drain, {opts.jobs:,} jobs, 1 process, concurrency 10, {opts.reps} reps")
        for label, values in rates.items():
            med, cpu = statistics.median(values), statistics.median(cpus[label])
            print(
                f"  {label:<24}{med:>9,.0f} jobs/s{med / before:>8.3f}x"
                f"{cpu:>8.0f} us CPU/job{cpu / cpu_before:>8.3f}x"
            )
        if opts.enqueues:
            enq: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
            for rep in range(opts.reps):
                pair = [("before", base, url_base), ("after", here, url_here)]
                for label, tree, url in pair if rep % 2 == 0 else pair[::-1]:
                    enq[label].append(await enqueue_once(tree, url, opts.enqueues))
            rate0 = statistics.median(r for r, _ in enq["before"])
            cpu0 = statistics.median(c for _, c in enq["before"])
            print(f"\nPlain enqueue, one at a time, {opts.enqueues:,} per run, {opts.reps} reps")
            for label, runs in enq.items():
                rate = statistics.median(r for r, _ in runs)
                cpu = statistics.median(c for _, c in runs)
                print(
                    f"  {label:<24}{rate:>9,.0f} /s{rate / rate0:>8.3f}x"
                    f"{cpu:>8.0f} us CPU each{cpu / cpu0:>8.3f}x"
                )
        limit, ms, n = 4, 50.0, opts.limited_jobs
        allowed = limit * 1000 / ms
        got = [await limited_once(here, url_here, n, limit, ms) for _ in range(opts.reps)]
        med = statistics.median(got)
        print(
            f"\nLimited queue: limit {limit}, {ms:g} ms jobs, 2 processes x concurrency 10, "
            f"{n} jobs: {med:,.1f} jobs/s of {allowed:,.0f} allowed = {med / allowed:.1%} "
            f"(runs: {', '.join(f'{g:.1f}' for g in got)})"
        )
    finally:
        for url in (url_base, url_here, url_paused):
            await drop_database(admin, url)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job_control")
    parser.add_argument("--base", required=True, help="source tree of the code before")
    parser.add_argument("--after", help="source tree of the code after (default: this one)")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--limited-jobs", type=int, default=400)
    parser.add_argument("--enqueues", type=int, default=2000, help="0 skips the enqueue check")
    parser.add_argument("--reps", type=int, default=5)
    opts = parser.parse_args()
    here = Path(opts.after).resolve() if opts.after else HERE
    asyncio.run(amain(opts, Path(opts.base).resolve(), here))


if __name__ == "__main__":
    main()
