"""Where a Soniq drain spends its time: ``python -m bench.profile [--jobs 40000]``.

Drains no-op jobs with one worker (concurrency 10) in this process, sampled by pyinstrument
(``pip install pyinstrument``; not a dependency of Soniq), and prints:

- the worker's CPU per job and the CPU per job of the PostgreSQL backend serving its round
  trips (from /proc/<pid>/schedstat, so a busy machine does not inflate them);
- the functions with the most self time (on-CPU samples of the worker process);
- one round trip's plan, as EXPLAIN ANALYZE reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from typing import Any

import asyncpg

from bench.common import admin_url, create_database, drop_database
from soniq import Soniq, sql


def _schedstat(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except OSError:
        return 0


def _self_times(frame: Any, out: Counter[str], owner: str = "?") -> None:
    """Self time per function; pyinstrument's synthetic frames ([self], [await]) count for the
    function they sit under."""
    if frame.is_synthetic:
        out[owner] += frame.time
        return
    name = f"{frame.function} ({frame.file_path_short}:{frame.line_no})"
    children = frame.children
    out[name] += frame.time - sum(c.time for c in children)
    for child in children:
        _self_times(child, out, name)


async def main(jobs: int, top: int) -> None:
    from pyinstrument import Profiler

    admin = admin_url()
    url = await create_database(admin, "profile")
    try:
        loader = Soniq(url)

        @loader.job(name="bench.job")
        async def job(i: int = 0) -> None:
            pass

        await loader.setup()
        for start in range(0, jobs, 1000):
            await loader.enqueue_many(
                "bench.job", [{"i": i} for i in range(start, min(jobs, start + 1000))]
            )
        pool = await loader.pool()
        await pool.execute("ANALYZE")
        await loader.close()

        app = Soniq(url)
        app.job(name="bench.job")(job)
        pool = await app.pool()
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        profiler.start()
        await app.run_worker(concurrency=10, run_once=True, install_signal_handlers=False)
        profiler.stop()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        # The pool was made just before the drain: its backends' CPU is the drain's.
        server = sum(
            _schedstat(h._con.get_server_pid()) for h in pool._holders if h._con is not None
        )
        print(f"drained {jobs:,} jobs in {wall:.2f}s ({jobs / wall:,.0f} jobs/s, sampled)")
        print(
            f"worker CPU per job: {cpu / jobs * 1e6:.1f} us; PostgreSQL backend CPU per job: "
            f"{server / 1000 / jobs:.1f} us"
        )

        session = profiler.last_session
        assert session is not None
        root = session.root_frame()
        assert root is not None
        totals: Counter[str] = Counter()
        _self_times(root, totals)
        total = sum(totals.values())
        print(f"\ntop {top} functions by self time (share of on-CPU samples):")
        for name, seconds in totals.most_common(top):
            print(f"  {seconds / total * 100:5.1f}%  {name}")

        # One steady-state round trip, explained: 100 finishes recorded, 100 jobs claimed.
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("TRUNCATE soniq_jobs")
            await conn.execute(
                "INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts) "
                "SELECT gen_random_uuid(), 'bench.job', 'default', '{}', 4 "
                "FROM generate_series(1, 20000)"
            )
            await conn.execute("ANALYZE soniq_jobs")
            claim = sql.finish_and_claim(sql.QUEUE_FILTER_ALL)
            held = await conn.fetch(
                claim, "w", [], [], [], [], [], [], [], 100, ["bench.job"], None, [], 100, "", ""
            )
            ids = ",".join(r["id"] for r in held)
            attempts = ",".join(str(r["attempt"]) for r in held)
            plan = await conn.fetch(
                "EXPLAIN (ANALYZE, WAL, COSTS OFF) " + claim,
                "w",
                [],
                [],
                [],
                [],
                [],
                [],
                [],
                100,
                ["bench.job"],
                None,
                [],
                0,
                ids,
                attempts,
            )
            print("\none round trip (100 recorded, 100 claimed):")
            for row in plan:
                print("  " + row[0])
        finally:
            await conn.close()
        await app.close()
    finally:
        await drop_database(admin, url)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=40_000)
    parser.add_argument("--top", type=int, default=20)
    opts = parser.parse_args()
    asyncio.run(main(opts.jobs, opts.top))
