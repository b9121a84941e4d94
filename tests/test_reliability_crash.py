"""Workers that die: SIGKILL mid-job, a job that kills its worker every time, and the other
side of the lease, a slow worker that must keep its job."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from soniq import Soniq
from tests.apps.jobs import build
from tests.apps.procs import Fleet, attempts_of, reset_attempts
from tests.support.waiting import running_worker, wait_status, wait_until

LEASE = 2.0


@pytest.fixture
async def producer(clean_db: str, db: asyncpg.Connection[Any]) -> AsyncIterator[Soniq]:
    await reset_attempts(db)
    app = build(clean_db)
    yield app
    await app.close()


async def test_killed_worker_job_runs_again_on_another_worker_within_the_lease(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    with Fleet(clean_db, tmp_path, lease_seconds=LEASE, poll_interval=0.5) as fleet:
        a = await fleet.start_ready("--concurrency", "2")
        b = await fleet.start_ready("--concurrency", "2")
        job_id = await producer.enqueue("sleepy", first=120, later=0.05)
        first = await wait_until(lambda: attempts_of(db, job_id), what="the first attempt")
        victim, survivor = (a, b) if first[0]["pid"] == a.pid else (b, a)

        victim.kill()
        killed_at = await db.fetchval("SELECT clock_timestamp()")
        job = await wait_status(producer, job_id, "done", timeout=LEASE * 4 + 20)
        rows = await attempts_of(db, job_id)

    assert [(r["attempt"], r["pid"]) for r in rows] == [(1, victim.pid), (2, survivor.pid)]
    assert rows[0]["ended_at"] is None  # the killed attempt never finished
    assert job["attempts"] == 2  # the lost attempt counts
    assert "WorkerLost" in job["last_error"]
    # A beat every lease/3: the job is noticed about one lease after its worker's last beat.
    # The bound is loose for a busy machine but far below "minutes".
    restarted_after = (rows[1]["started_at"] - killed_at).total_seconds()
    assert restarted_after < LEASE * 2 + 4, restarted_after
    assert "lost its worker" in survivor.log()


async def test_slow_but_alive_worker_keeps_its_job_over_many_leases(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    lease = 1.5
    with Fleet(clean_db, tmp_path, lease_seconds=lease, poll_interval=0.2) as fleet:
        first_worker = await fleet.start_ready("--concurrency", "2")
        job_id = await producer.enqueue("sleepy", first=lease * 3, later=0.05)
        await wait_until(lambda: attempts_of(db, job_id), what="the attempt to start")
        idle = await fleet.start_ready("--concurrency", "2")  # would take the job if it were lost
        job = await wait_status(producer, job_id, "done", timeout=lease * 4 + 20)
        rows = await attempts_of(db, job_id)

    assert [(r["attempt"], r["pid"]) for r in rows] == [(1, first_worker.pid)]
    assert job["attempts"] == 1 and job["last_error"] is None
    assert "lost its worker" not in idle.log()


async def test_jobs_holding_every_pool_connection_do_not_cost_their_worker_its_lease(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    """Jobs that keep Soniq's pool busy (long transactions) must not starve the heartbeat."""
    lease = 1.5
    with Fleet(clean_db, tmp_path, lease_seconds=lease, poll_interval=0.2) as fleet:
        busy = await fleet.start_ready("--concurrency", "2", pool_max_size=2)
        ids = [await producer.enqueue("hold_connection", seconds=lease * 4) for _ in range(2)]

        async def both_started() -> bool:
            return all([await attempts_of(db, i) for i in ids])

        await wait_until(both_started, what="both jobs to hold a connection")
        other = await fleet.start_ready("--concurrency", "2")
        jobs = [await wait_status(producer, i, "done", timeout=lease * 4 + 20) for i in ids]
        rows = [await attempts_of(db, i) for i in ids]

    assert [[(r["attempt"], r["pid"]) for r in job_rows] for job_rows in rows] == [
        [(1, busy.pid)],
        [(1, busy.pid)],
    ]
    assert [j["attempts"] for j in jobs] == [1, 1]
    assert "lost its worker" not in other.log()


async def test_a_job_that_kills_its_worker_every_time_ends_in_the_dead_letter_queue(
    producer: Soniq, db: asyncpg.Connection[Any], clean_db: str, tmp_path: Path
) -> None:
    lease = 1.5
    deaths = 0
    with Fleet(clean_db, tmp_path, lease_seconds=lease, poll_interval=0.2) as fleet:
        worker = await fleet.start_ready("--concurrency", "1")
        job_id = await producer.enqueue("poison")  # max_retries=2: three attempts

        async def settled() -> bool:
            # A supervisor's job: start a fresh worker whenever the job has killed one.
            nonlocal worker, deaths
            if not worker.alive():
                deaths += 1
                assert worker.proc.returncode == 3
                worker = fleet.start("--concurrency", "1")
            job = await producer.get_job(job_id)
            return job is not None and job["status"] == "dead_letter"

        await wait_until(
            settled,
            timeout=4 * (lease * 2 + 10),
            interval=0.1,
            what="the poison job to be dead-lettered",
        )
        job = await producer.get_job(job_id)
        rows = await attempts_of(db, job_id)

    assert job is not None
    assert deaths == 3
    assert [r["attempt"] for r in rows] == [1, 2, 3]
    assert len({r["pid"] for r in rows}) == 3  # each attempt took a worker down
    assert job["attempts"] == 3
    assert job["last_error"].startswith("WorkerLost")
    assert "attempts exhausted" in job["last_error"]
    assert "killing its worker" in job["last_error"]


async def test_a_lost_job_goes_back_with_its_attempt_counted_and_keeps_its_place(
    app: Soniq, db: asyncpg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Recovery as any worker does it, on a job held by a worker that no longer exists."""

    @app.job(name="orphan", max_retries=1)
    async def orphan() -> None: ...

    first = await app.enqueue("orphan", scheduled_at=-3600)  # due an hour ago
    last = await app.enqueue("orphan", scheduled_at=-3600)
    for job_id, attempts in ((first, 1), (last, 2)):
        await db.execute(
            "UPDATE soniq_jobs SET status = 'processing', attempts = $2, "
            "worker_id = 'gone:1:dead', started_at = now() WHERE id = $1",
            job_id,
            attempts,
        )
    before = await app.get_job(first)
    # A worker of another queue: it recovers what it finds but does not claim these.
    async with running_worker(app, queues=["elsewhere"]):
        again = await wait_status(app, first, "queued", timeout=20)
        dead = await wait_status(app, last, "dead_letter", timeout=20)
    assert before is not None
    assert again["attempts"] == 1 and again["worker_id"] is None
    assert again["scheduled_at"] == before["scheduled_at"]  # still first in line
    assert again["last_error"] == (
        "WorkerLost: worker gone:1:dead stopped heartbeating during attempt 1"
    )
    assert dead["attempts"] == 2 and dead["finished_at"] is not None
    assert dead["last_error"].endswith("attempts exhausted (the job may be killing its worker)")
    # Put back: a WARNING; moved to the dead-letter queue: an ERROR, as for any dead letter.
    lost = {
        getattr(r, "job_id", None): r.levelno
        for r in caplog.records
        if getattr(r, "event", None) == "job.worker_lost"
    }
    assert lost == {first: logging.WARNING, last: logging.ERROR}
