"""Three worker processes, 5,000 jobs, workers SIGKILLed and restarted at random: every job
ends done, no two attempts of a job overlap, and the attempt counts reconcile with the kills.
The longer run is bench/chaos.py."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg

from tests.apps.chaos import ChaosReport, run_chaos, verify
from tests.apps.procs import reset_attempts


async def test_chaos_killing_workers_at_random_loses_nothing_and_never_runs_a_job_twice_at_once(
    clean_db: str, tmp_path: Path
) -> None:
    report = await run_chaos(
        clean_db,
        tmp_path,
        jobs=5000,
        workers=3,
        concurrency=4,
        lease=2.0,
        kills=6,
        pause=(0.4, 1.2),
        deadline=90,
    )
    print(report.summary())
    assert report.problems == [], report.summary()
    assert report.statuses == {"done": 5000}
    assert report.kills == 6
    # The kills did hit running jobs: the run exercised recovery, not just restarts.
    assert report.attempts > 5000


async def test_the_chaos_check_catches_overlaps_and_unexplained_reruns(
    db: asyncpg.Connection[Any],
) -> None:
    """The checker itself can fail: fed a history with an overlap, a re-run on a worker that
    was never killed, and more lost attempts than one kill explains, it names each one."""
    await reset_attempts(db)
    overlapping, rerun, clean = (str(uuid.uuid4()) for _ in range(3))
    for job_id, attempts in ((overlapping, 2), (rerun, 2), (clean, 1)):
        await db.execute(
            "INSERT INTO soniq_jobs (id, job_name, queue, args, status, attempts, max_attempts)"
            " VALUES ($1, 'chaos', 'default', '{}', 'done', $2, 26)",
            job_id,
            attempts,
        )
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def at(seconds: float) -> datetime:
        return t0 + timedelta(seconds=seconds)

    history = [
        (overlapping, 1, 100, at(0), None),  # pid 100 was killed at t=5 ...
        (overlapping, 2, 200, at(3), at(4)),  # ... but this started at t=3
        (rerun, 1, 300, at(0), at(1)),  # 300 was never killed: why a second run?
        (rerun, 2, 200, at(2), at(3)),
        (clean, 1, 200, at(0), at(1)),
    ]
    await db.executemany(
        "INSERT INTO reliability_attempts (job_id, attempt, pid, started_at, ended_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        history,
    )
    report = ChaosReport(jobs=3, workers=2, concurrency=1, kills=1)
    await verify(db, report, {100: at(5)})
    problems = "\n".join(report.problems)
    assert f"job {overlapping}: attempt 2 (pid 200) started" in problems
    assert f"job {rerun} ran again after attempt 1 on 300, a worker that was never killed" in (
        problems
    )
    assert "2 attempts beyond one per job" in problems  # one kill of a 1-slot worker: max 1
    assert str(clean) not in problems
    assert len(report.problems) == 3, problems
