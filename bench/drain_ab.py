"""Drain rate of this tree against another checkout, alternating, in one run: a schema change
that must not slow the plain drain is timed here (bench.drain_work gives its database work).

    .venv/bin/python -m bench.drain_ab --base /tmp/main-src
    .venv/bin/python -m bench.drain_ab --base /tmp/main-src --dead-letters 2000

Each measurement is a subprocess with one tree's ``src`` first on the path: a fresh database,
``--dead-letters`` dead-lettered jobs written first (kept by default in production), ``--jobs``
jobs enqueued and analysed, then one ``run_once`` worker at ``--concurrency`` drains them,
timed, with the CPU time the database's backends spent on it (read from /proc, so the server
must run on this machine). The two trees take turns, the first of each round alternating, so
a change in the machine's load falls on both; on a shared machine compare the medians and the
pairs, and the database CPU, which waiting for a CPU does not inflate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, admin_url, create_database, drop_database


async def measure(jobs: int, dead_letters: int, concurrency: int) -> dict[str, float]:
    from soniq import Soniq

    admin = admin_url()
    url = await create_database(admin, "drain_ab")
    try:
        app = Soniq(url)

        @app.job(name="bench.job")
        async def job(i: int = 0) -> None:
            return None

        async with app:
            await app.setup()
            pool = await app.pool()
            await pool.execute(
                "INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts, status, "
                "created_at, finished_at) SELECT gen_random_uuid(), 'failing', 'default', '{}', "
                "3, 'dead_letter', now() - interval '1 day', now() - interval '1 day' "
                "FROM generate_series(1, $1)",
                dead_letters,
            )
            for start in range(0, jobs, 1000):
                await app.enqueue_many(
                    "bench.job", [{"i": i} for i in range(start, min(jobs, start + 1000))]
                )
            await pool.execute("VACUUM ANALYZE soniq_jobs")
            worker = app.worker(
                concurrency=concurrency, run_once=True, install_signal_handlers=False
            )
            before = await _backend_cpu(pool)
            started, cpu = time.perf_counter(), time.process_time()
            await worker.run()
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu
            after = await _backend_cpu(pool)
            backend = sum(ns - before.get(pid, 0) for pid, ns in after.items())
            left = await pool.fetchval(
                "SELECT count(*) FROM soniq_jobs WHERE status NOT IN ('done', 'dead_letter')"
            )
            if left:
                raise RuntimeError(f"{left} jobs not drained")
    finally:
        await drop_database(admin, url)
    return {"rate": jobs / wall, "cpu_us": cpu / jobs * 1e6, "backend_us": backend / jobs / 1e3}


async def _backend_cpu(pool: Any) -> dict[int, int]:
    """CPU nanoseconds so far of every backend of this database (/proc/<pid>/schedstat: time
    on a CPU, which waiting for one on a busy machine does not add to)."""
    pids = await pool.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return {r[0]: _schedstat(r[0]) for r in pids}


def _schedstat(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:  # a server on another machine, or the backend has gone
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", help="root of another checkout to compare with")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--dead-letters", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.json or not opts.base:
        one = asyncio.run(measure(opts.jobs, opts.dead_letters, opts.concurrency))
        print(json.dumps(one) if opts.json else f"{one['rate']:,.0f} jobs/s")
        return
    trees = {"this tree": ROOT, f"base ({opts.base})": opts.base}
    rates: dict[str, list[float]] = {side: [] for side in trees}
    backend: dict[str, list[float]] = {side: [] for side in trees}
    for round_ in range(opts.rounds):
        order = list(trees) if round_ % 2 == 0 else list(trees)[::-1]
        for side in order:
            path = os.path.join(trees[side], "src") + os.pathsep + ROOT
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.drain_ab",
                    "--json",
                    "--jobs",
                    str(opts.jobs),
                    "--dead-letters",
                    str(opts.dead_letters),
                    "--concurrency",
                    str(opts.concurrency),
                ],
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path},
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rates[side].append(result["rate"])
            backend[side].append(result["backend_us"])
            load = os.getloadavg()[0]
            print(
                f"round {round_} {side}: {result['rate']:,.0f} jobs/s, worker CPU "
                f"{result['cpu_us']:.0f} us/job, database CPU {result['backend_us']:.1f} "
                f"us/job, load {load:.1f}",
                flush=True,
            )
    for side, values in rates.items():
        listed = ", ".join(f"{v:,.0f}" for v in values)
        print(
            f"{side}: median {statistics.median(values):,.0f} jobs/s ({listed}); database CPU "
            f"median {statistics.median(backend[side]):.1f} us/job"
        )


if __name__ == "__main__":
    main()
