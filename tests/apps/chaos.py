"""Chaos: worker processes killed (SIGKILL) and restarted at random while jobs flow, then a
check that every job is done, no two attempts of one job overlapped, and the counts add up.

Used by tests/test_reliability_chaos.py (a short run) and bench/chaos.py (a long one).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from soniq.settings import Settings
from tests.apps.jobs import build
from tests.apps.procs import Fleet, WorkerProcess, reset_attempts, wait_exit


@dataclass
class ChaosReport:
    jobs: int
    workers: int
    concurrency: int
    prefetch: int = 0  # the workers' cap on jobs claimed ahead of their slots
    kills: int = 0
    seconds: float = 0.0
    attempts: int = 0  # sum of soniq_jobs.attempts
    recorded: int = 0  # attempt rows the jobs wrote
    interrupted: int = 0  # recorded attempts that never ended (their worker was killed)
    reruns: int = 0  # jobs that ran more than once
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.jobs} jobs, {self.workers} workers x {self.concurrency}, {self.kills} kills "
            f"in {self.seconds:.1f}s: statuses {self.statuses}, {self.attempts} attempts "
            f"counted, {self.recorded} recorded, {self.interrupted} interrupted, "
            f"{self.reruns} jobs re-run, {len(self.problems)} problems"
        )


async def run_chaos(
    database_url: str,
    folder: Path,
    *,
    jobs: int = 5000,
    workers: int = 3,
    concurrency: int = 4,
    lease: float = 2.0,
    kills: int = 8,
    pause: tuple[float, float] = (0.3, 1.5),
    deadline: float = 120.0,
    seed: int | None = None,
) -> ChaosReport:
    """Run the chaos on an empty Soniq database; ``kills`` SIGKILLs, one every ``pause``."""
    rng = random.Random(seed)
    report = ChaosReport(
        jobs=jobs, workers=workers, concurrency=concurrency, prefetch=Settings().prefetch
    )
    conn = await asyncpg.connect(database_url)
    producer = build(database_url)
    deaths: dict[int, datetime] = {}
    started = time.monotonic()
    try:
        await reset_attempts(conn)
        with Fleet(
            database_url, folder, lease_seconds=lease, poll_interval=0.5, grace_period=5
        ) as fleet:
            fleet_args = ("--concurrency", str(concurrency))
            alive: list[tuple[WorkerProcess, float]] = [
                (fleet.start(*fleet_args), time.monotonic()) for _ in range(workers)
            ]

            async def produce() -> None:
                # Jobs arrive while the chaos goes on, not all up front.
                for first in range(0, jobs, 500):
                    batch = [{"n": n} for n in range(first, min(jobs, first + 500))]
                    await producer.enqueue_many("chaos", batch)
                    await asyncio.sleep(rng.uniform(0, 0.3))

            producing = asyncio.create_task(produce())
            while report.kills < kills and time.monotonic() - started < deadline:
                await asyncio.sleep(rng.uniform(*pause))
                # Kill one that has had time to start; a replacement starts at once.
                ready = [i for i, (w, t) in enumerate(alive) if time.monotonic() - t > 1.0]
                if not ready:
                    continue
                victim, _ = alive.pop(rng.choice(ready))
                victim.kill()
                deaths[victim.pid] = await conn.fetchval("SELECT clock_timestamp()")
                report.kills += 1
                alive.append((fleet.start(*fleet_args), time.monotonic()))
            await producing

            async def finished() -> bool:
                left = await conn.fetchval("SELECT count(*) FROM soniq_jobs WHERE status <> 'done'")
                total = await conn.fetchval("SELECT count(*) FROM soniq_jobs")
                return bool(left == 0 and total == jobs)

            while not await finished():
                if time.monotonic() - started > deadline:
                    report.problems.append(f"not every job done after {deadline:.0f}s")
                    break
                await asyncio.sleep(0.2)
            report.seconds = time.monotonic() - started

            for worker, _ in alive:
                worker.signal(signal.SIGTERM)
            for worker, _ in alive:
                code = await wait_exit(worker, timeout=30)
                if code != 0:
                    report.problems.append(f"worker {worker.pid} exited {code} on SIGTERM")
        await verify(conn, report, deaths)
    finally:
        await producer.close()
        await conn.close()
    return report


async def verify(
    conn: asyncpg.Connection[Any], report: ChaosReport, deaths: dict[int, datetime]
) -> None:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM soniq_jobs GROUP BY status")
    report.statuses = {r["status"]: r["n"] for r in rows}
    if report.statuses != {"done": report.jobs}:
        report.problems.append(f"statuses {report.statuses}, expected all {report.jobs} done")
    jobs = {
        str(r["id"]): r["attempts"] for r in await conn.fetch("SELECT id, attempts FROM soniq_jobs")
    }
    report.attempts = sum(jobs.values())
    attempts = await conn.fetch(
        "SELECT job_id, attempt, pid, started_at, ended_at FROM reliability_attempts "
        "ORDER BY job_id, started_at"
    )
    report.recorded = len(attempts)
    by_job: dict[str, list[asyncpg.Record]] = {}
    for row in attempts:
        by_job.setdefault(str(row["job_id"]), []).append(row)

    not_final = 0
    for job_id, counted in jobs.items():
        runs = by_job.get(job_id, [])
        if not runs:
            report.problems.append(f"job {job_id} is done but no attempt of it ran")
            continue
        if len(runs) > 1:
            report.reruns += 1
        not_final += len(runs) - 1
        last = runs[-1]
        if last["ended_at"] is None or last["attempt"] != counted:
            report.problems.append(
                f"job {job_id}: its last attempt ({last['attempt']}, ended "
                f"{last['ended_at']}) is not the one counted ({counted})"
            )
        for earlier, later in itertools.pairwise(runs):
            if earlier["pid"] not in deaths:
                report.problems.append(
                    f"job {job_id} ran again after attempt {earlier['attempt']} on "
                    f"{earlier['pid']}, a worker that was never killed"
                )
            end = earlier["ended_at"] or deaths.get(earlier["pid"])
            if end is None:
                continue
            if later["started_at"] < end:
                report.problems.append(
                    f"job {job_id}: attempt {later['attempt']} (pid {later['pid']}) started "
                    f"at {later['started_at']}, before attempt {earlier['attempt']} (pid "
                    f"{earlier['pid']}) ended at {end}"
                )
            if later["attempt"] <= earlier["attempt"]:
                report.problems.append(
                    f"job {job_id}: attempt numbers {earlier['attempt']} then {later['attempt']}"
                )
    for row in attempts:
        if row["ended_at"] is None:
            report.interrupted += 1
            if row["pid"] not in deaths:
                report.problems.append(
                    f"job {row['job_id']}: attempt {row['attempt']} never ended, yet its "
                    f"worker {row['pid']} was not killed"
                )
    # Each attempt beyond the one that succeeded was lost with a killed worker. A kill counts
    # at most the jobs the worker held: its slots, and those it had claimed ahead (any of them
    # may have started before the worker could write so).
    extra = report.attempts - report.jobs
    held = report.concurrency + report.prefetch
    if not not_final <= extra <= report.kills * held:
        report.problems.append(
            f"{extra} attempts beyond one per job, {not_final} of them recorded: expected "
            f"between those and {report.kills} kills x {held} jobs held"
        )
