"""Under load: a worker's memory over 100,000 jobs, and claim speed on a 1,000,000-row queue.

    .venv/bin/python bench/memory_soak.py                      # both parts
    .venv/bin/python bench/memory_soak.py --part memory --jobs 100000
    .venv/bin/python bench/memory_soak.py --part claim --backlog 1000000 --sample 20000

memory: one `soniq worker` process runs --jobs no-op jobs, fed in batches so the queue never
runs dry; its RSS is sampled as it goes. Reported: RSS after the warm-up (the first tenth of the
jobs) and at the end, and the growth between them per 10,000 jobs.

claim: on a queue of --sample ready jobs, then on one of --backlog ready jobs (inserted in
bulk), --rounds times alternately: the claims/s of the worker's round trip alone (finish the
last batch, claim the next; no job run), then a `soniq worker` process's jobs/s over half the
sample. Reported: each run, the medians and their ratios, all from the same run and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the worker app is in tests/apps
from tests.apps.benchdb import bench_database
from tests.apps.jobs import build
from tests.apps.procs import Fleet, wait_exit
from tests.support.waiting import wait_until

from soniq import sql_liveness
from soniq.jobs import FinishedAttempt, JobStatus

MB = 1024 * 1024


async def done_count(conn: asyncpg.Connection[Any]) -> int:
    count: int = await conn.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'done'")
    return count


async def memory(url: str, folder: Path, jobs: int, concurrency: int) -> dict[str, Any]:
    producer = build(url)
    conn = await asyncpg.connect(url)
    samples: list[tuple[int, float]] = []
    try:
        with Fleet(url, folder, poll_interval=1) as fleet:
            worker = await fleet.start_ready("--concurrency", str(concurrency))
            process = psutil.Process(worker.pid)
            enqueued = 0
            batch = 5000
            started = time.monotonic()
            while True:
                done = await done_count(conn)
                if enqueued < jobs and enqueued - done < 2 * batch:
                    size = min(batch, jobs - enqueued)
                    await producer.enqueue_many(
                        "noop", [{"n": n} for n in range(enqueued, enqueued + size)]
                    )
                    enqueued += size
                if not samples or done - samples[-1][0] >= jobs // 50:
                    samples.append((done, process.memory_info().rss / MB))
                if done >= jobs:
                    break
                await asyncio.sleep(0.2)
            seconds = time.monotonic() - started
            samples.append((done, process.memory_info().rss / MB))
            worker.signal(signal.SIGTERM)
            await wait_exit(worker, timeout=60)
    finally:
        await producer.close()
        await conn.close()
    warm = next(rss for done, rss in samples if done >= jobs // 10)
    end = samples[-1][1]
    return {
        "jobs": jobs,
        "seconds": round(seconds, 1),
        "rss_start_mb": round(samples[0][1], 1),
        "rss_after_warmup_mb": round(warm, 1),
        "rss_end_mb": round(end, 1),
        "growth_per_10k_jobs_mb": round((end - warm) / (jobs * 0.9 / 10_000), 3),
        "samples": [(d, round(r, 1)) for d, r in samples],
    }


async def throughput(url: str, folder: Path, sample: int, concurrency: int) -> float:
    """Jobs/s of one worker over ``sample`` jobs, from the first done to the last."""
    conn = await asyncpg.connect(url)
    try:
        base = await done_count(conn)
        with Fleet(url, folder, poll_interval=1) as fleet:
            worker = await fleet.start_ready("--concurrency", str(concurrency))

            async def reached(count: int) -> bool:
                return await done_count(conn) >= count

            await wait_until(lambda: reached(base + 1), timeout=600, interval=0.01)
            started = time.monotonic()
            await wait_until(lambda: reached(base + sample), timeout=3600, interval=0.05)
            seconds = time.monotonic() - started
            worker.signal(signal.SIGTERM)
            await wait_exit(worker, timeout=60)
    finally:
        await conn.close()
    return (sample - 1) / seconds


async def round_trips(url: str, count: int, batch: int) -> float:
    """Claims/s of the worker's own round trip alone (finish the last batch, claim the next),
    with no job run and no process in between: the claim cost, nearly free of other noise."""
    app = build(url)
    worker = app.worker(concurrency=batch, install_signal_handlers=False)
    worker._db.known_names = app.registry.names()
    finished: list[FinishedAttempt] = []
    try:
        started = time.monotonic()
        for _ in range(count):
            claim = await worker._round_trip(finished, batch, batch)
            finished = [
                FinishedAttempt(j.id, JobStatus.DONE, attempt=j.attempt) for j in claim.jobs
            ]
        seconds = time.monotonic() - started
        await worker._round_trip(finished, 0)
    finally:
        await app.close()
    return count * batch / seconds


async def insert_ready(conn: asyncpg.Connection[Any], count: int) -> None:
    # Straight SQL: a million enqueue calls would measure the producer, not the claim.
    await conn.execute(
        """
        INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts)
        SELECT gen_random_uuid(), 'noop', 'default', jsonb_build_object('n', n), 1
        FROM generate_series(1, $1) AS n
        """,
        count,
    )
    await conn.execute("VACUUM ANALYZE soniq_jobs")


async def claim(
    url: str, folder: Path, backlog: int, sample: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    smalls: list[float] = []
    larges: list[float] = []
    trips_small: list[float] = []
    trips_large: list[float] = []
    trips = sample // concurrency // 2  # round trips per measurement, half the sample
    try:
        # Alternated, so a change in the machine's load during the run hits both sides.
        for _ in range(rounds):
            await conn.execute("TRUNCATE soniq_jobs, soniq_workers")
            await insert_ready(conn, sample)
            trips_small.append(await round_trips(url, trips, concurrency))
            smalls.append(await throughput(url, folder, sample // 2, concurrency))

            await conn.execute("TRUNCATE soniq_jobs, soniq_workers")
            started = time.monotonic()
            await insert_ready(conn, backlog)
            filled = time.monotonic() - started
            trips_large.append(await round_trips(url, trips, concurrency))
            larges.append(await throughput(url, folder, sample // 2, concurrency))
        small, large = statistics.median(smalls), statistics.median(larges)
        trip_small, trip_large = statistics.median(trips_small), statistics.median(trips_large)
        # What the heartbeat's own housekeeping costs on the big queue, once per beat.
        beat_ms = {}
        for label, queues in (("all_queues", None), ("one_queue", ["default"])):
            plan = await conn.fetchval(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + sql_liveness.UNKNOWN_READY_NAMES,
                queues,
                ["noop"],
            )
            beat_ms[label] = round(json.loads(plan)[0]["Execution Time"], 2)
    finally:
        await conn.close()
    return {
        "sample_jobs": sample // 2,
        "rounds": rounds,
        "small_queue_runs": [round(x) for x in smalls],
        "large_queue_runs": [round(x) for x in larges],
        "small_queue_jobs_per_s": round(small),
        "backlog_rows": backlog,
        "backlog_insert_s": round(filled, 1),
        "large_queue_jobs_per_s": round(large),
        "large_over_small": round(large / small, 2),
        "round_trip_claims_per_s_small": round(trip_small),
        "round_trip_claims_per_s_large": round(trip_large),
        "round_trip_large_over_small": round(trip_large / trip_small, 2),
        "round_trip_runs_small": [round(x) for x in trips_small],
        "round_trip_runs_large": [round(x) for x in trips_large],
        "unknown_name_check_ms_on_backlog": beat_ms,
    }


async def main(args: argparse.Namespace) -> None:
    async with bench_database("soniq_soak") as url:
        with tempfile.TemporaryDirectory(prefix="soniq-soak-") as folder:
            if args.part in ("memory", "both"):
                result = await memory(url, Path(folder), args.jobs, args.concurrency)
                samples = result.pop("samples")
                print("memory:", result, flush=True)
                print("memory samples (jobs done, RSS MB):", samples, flush=True)
            if args.part in ("claim", "both"):
                print(
                    "claim:",
                    await claim(
                        url, Path(folder), args.backlog, args.sample, args.concurrency, args.rounds
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["memory", "claim", "both"], default="both")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="claim runs of each size")
    asyncio.run(main(parser.parse_args()))
