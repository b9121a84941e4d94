"""Claiming ahead of free slots (prefetch) keeps every reliability promise.

A worker claims a few jobs more than it has free slots, so fast jobs need not wait for a round
trip each. Those jobs are the worker's but not started; one started from that buffer has its
start written by the worker's next round trip. These tests check that such a job is never lost
and never run twice at once; that a graceful stop gives it back uncounted; that when its worker
is killed it is counted as an attempt used (it may have started), except on its last attempt,
which never starts before its start is written; and that a job that kills its worker is
dead-lettered once its attempts are used up.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import textwrap
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from soniq import JobContext, Soniq, sql_liveness
from soniq.jobs import ClaimedJob
from soniq.worker_store import WorkerStore
from tests.support.waiting import running_worker, wait_until


@pytest.fixture(autouse=True)
def prefetch_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefetch is on by default; pinned here so that an environment which turns it off cannot
    hollow these tests out (worker subprocesses inherit it)."""
    monkeypatch.setenv("SONIQ_PREFETCH", "200")


async def test_fast_jobs_run_once_each_with_attempt_one(app: Soniq, db: asyncpg.Connection) -> None:
    seen: Counter[int] = Counter()
    attempts: set[int] = set()

    @app.job(name="fast")
    async def fast(i: int, ctx: JobContext) -> None:
        seen[i] += 1
        attempts.add(ctx.attempt)

    await app.enqueue_many("fast", [{"i": i} for i in range(600)])
    async with running_worker(app, concurrency=2) as worker:
        await wait_until(lambda: len(seen) == 600, timeout=30, what="600 jobs to run")
        assert worker.prefetch > 0
    assert set(seen.values()) == {1}
    assert attempts == {1}
    rows = await db.fetch("SELECT status, attempts, count(*) FROM soniq_jobs GROUP BY 1, 2")
    assert [tuple(r) for r in rows] == [("done", 1, 600)]


async def _claim_for_a_worker_about_to_die(app: Soniq, want: int) -> list[ClaimedJob]:
    """What a worker with one free slot claims when it asks for ``want`` jobs: one counted as
    started, the rest claimed ahead (the caller then silences its heartbeat)."""
    worker = WorkerStore(app._store, "dead", None, 1)
    worker.known_names = ["job"]
    await worker.register_worker()
    return (await worker.finish_and_claim((), free=1, want=want)).jobs


async def test_claimed_ahead_jobs_on_their_last_attempt_go_back_uncounted_and_suspect(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job", max_retries=0)
    async def job(i: int) -> None:
        pass

    ids = await app.enqueue_many("job", [{"i": i} for i in range(4)])
    # A worker that claimed four jobs, one for its free slot and three ahead, then died.
    claimed = await _claim_for_a_worker_about_to_die(app, want=4)
    assert [r["counted"] for r in claimed] == [True, False, False, False]
    assert [r["attempt"] for r in claimed] == [1, 1, 1, 1]
    await db.execute("UPDATE soniq_workers SET heartbeat_at = now() - interval '1 hour'")

    recovered = await db.fetch(sql_liveness.RECOVER_LOST_JOBS, 3.0)
    assert len(recovered) == 4
    rows = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id::text, status, attempts, suspect, last_error FROM soniq_jobs"
        )
    }
    running = rows[claimed[0]["id"]]
    # It was running on its only attempt: counted, and dead-lettered.
    assert (running["status"], running["attempts"], running["suspect"]) == ("dead_letter", 1, False)
    for row in claimed[1:]:
        back = rows[row["id"]]
        assert (back["status"], back["attempts"], back["suspect"]) == ("queued", 0, True)
        assert "not counted" in back["last_error"]
    assert set(rows) == set(ids)


async def test_claimed_ahead_jobs_with_attempts_left_are_counted_when_their_worker_dies(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="job", max_retries=2)
    async def job(i: int) -> None:
        pass

    await app.enqueue_many("job", [{"i": i} for i in range(3)])
    claimed = await _claim_for_a_worker_about_to_die(app, want=3)
    assert [r["counted"] for r in claimed] == [True, False, False]
    await db.execute("UPDATE soniq_workers SET heartbeat_at = now() - interval '1 hour'")

    assert len(await db.fetch(sql_liveness.RECOVER_LOST_JOBS, 3.0)) == 3
    rows = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id::text, status, attempts, suspect, last_error FROM soniq_jobs"
        )
    }
    # Each may have run (and killed the worker): one attempt used, so its next run is number 2.
    for row in claimed:
        back = rows[row["id"]]
        assert (back["status"], back["attempts"]) == ("queued", 1)
        assert back["suspect"] is (not row["counted"])
        expected = "during attempt 1" if row["counted"] else "perhaps started; counted"
        assert expected in back["last_error"]


async def _attempts_and_started(db: asyncpg.Connection, job_id: str) -> tuple[int, bool]:
    """What the database holds of a running job: its attempts, and whether its start is
    written."""
    row = await db.fetchrow(
        "SELECT attempts, started_at IS NOT NULL AS started FROM soniq_jobs WHERE id = $1",
        job_id,
    )
    assert row is not None
    return row["attempts"], row["started"]


async def test_a_last_attempt_has_its_start_recorded_before_it_runs(
    app: Soniq, db: asyncpg.Connection
) -> None:
    seen_in_db: dict[int, tuple[int, bool]] = {}

    @app.job(name="job", max_retries=0)
    async def job(i: int, ctx: JobContext) -> None:
        if i % 10 == 0:
            seen_in_db[i] = await _attempts_and_started(db, ctx.job_id)

    await app.enqueue_many("job", [{"i": i} for i in range(400)])
    async with running_worker(app, concurrency=1) as worker:
        await wait_until(lambda: len(seen_in_db) == 40, timeout=30, what="40 checks to run")
        assert worker.prefetch > 0
    assert set(seen_in_db.values()) == {(1, True)}


async def test_a_suspect_job_has_its_attempt_recorded_before_it_runs(
    app: Soniq, db: asyncpg.Connection
) -> None:
    seen_in_db: dict[int, tuple[int, bool]] = {}

    @app.job(name="job")
    async def job(i: int, ctx: JobContext) -> None:
        if i >= 1000:
            seen_in_db[i] = await _attempts_and_started(db, ctx.job_id)

    # Many fast jobs first, so the worker is claiming ahead when it reaches the suspect ones.
    await app.enqueue_many("job", [{"i": i} for i in range(400)])
    await app.enqueue_many("job", [{"i": 1000 + i} for i in range(40)])
    await db.execute("UPDATE soniq_jobs SET suspect = true WHERE (args->>'i')::int >= 1000")
    async with running_worker(app, concurrency=1):
        await wait_until(lambda: len(seen_in_db) == 40, timeout=30, what="suspect jobs to run")
    assert set(seen_in_db.values()) == {(1, True)}
    rows = await db.fetch("SELECT DISTINCT status, suspect FROM soniq_jobs")
    assert [tuple(r) for r in rows] == [("done", False)]


async def test_graceful_stop_gives_back_claimed_ahead_jobs_without_an_attempt(
    app: Soniq, db: asyncpg.Connection
) -> None:
    ran: list[int] = []

    @app.job(name="job", max_retries=0)
    async def job(i: int) -> None:
        ran.append(i)

    await app.enqueue_many("job", [{"i": i} for i in range(20_000)])
    async with running_worker(app, concurrency=2):
        await wait_until(lambda: len(ran) >= 2000, timeout=60, what="2,000 jobs to run")
    rows = await db.fetch(
        "SELECT status, attempts, count(*) AS n FROM soniq_jobs GROUP BY 1, 2 ORDER BY 1"
    )
    by_state = {(r["status"], r["attempts"]): r["n"] for r in rows}
    assert set(by_state) == {("done", 1), ("queued", 0)}, by_state
    assert by_state[("done", 1)] == len(ran) == len(set(ran))


async def _exited_or(proc: asyncio.subprocess.Process, done: Callable[[], Awaitable[bool]]) -> bool:
    return proc.returncode is not None or await done()


WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys
    from soniq import Soniq

    url, runs = sys.argv[1], sys.argv[2]
    app = Soniq(url, lease_seconds=1, poll_interval=0.2, grace_period=2)

    @app.job(name="fast", max_retries=3)
    def fast(i: int) -> None:
        with open(runs, "a") as f:
            f.write(f"{i}\\n")

    @app.job(name="poison", max_retries=1)
    async def poison() -> None:
        os._exit(3)

    asyncio.run(app.run_worker(concurrency=1))
    """
)


async def test_a_job_that_kills_its_worker_is_dead_lettered_and_no_other_job_is_lost(
    app: Soniq, db: asyncpg.Connection, clean_db: str, tmp_path: Path
) -> None:
    @app.job(name="fast", max_retries=3)
    def fast(i: int) -> None:
        pass

    @app.job(name="poison", max_retries=1)
    async def poison() -> None:
        pass

    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    runs = tmp_path / "runs.txt"
    await app.enqueue_many("fast", [{"i": i} for i in range(300)])
    poison_id = await app.enqueue("poison")
    await app.enqueue_many("fast", [{"i": i} for i in range(300, 600)])

    async def settled() -> bool:
        left = await db.fetchval(
            "SELECT count(*) FROM soniq_jobs WHERE status NOT IN ('done', 'dead_letter')"
        )
        return bool(left == 0)

    deaths = 0
    proc: asyncio.subprocess.Process | None = None
    try:
        for _ in range(8):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(script), clean_db, str(runs)
            )
            await wait_until(
                functools.partial(_exited_or, proc, settled),
                timeout=60,
                what="worker death or all jobs final",
            )
            if proc.returncode is None:
                break
            assert proc.returncode == 3
            deaths += 1
        assert await settled(), "jobs left unfinished"
    finally:
        if proc is not None and proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)

    poisoned = await app.get_job(poison_id)
    assert poisoned is not None
    assert poisoned["status"] == "dead_letter"
    assert poisoned["attempts"] == 2
    assert "attempts exhausted" in poisoned["last_error"]
    # Every death counted: the first start (from the buffer) by the lease recovery, the second,
    # its last attempt, because its start was written before it ran.
    assert deaths == 2
    statuses = await db.fetch("SELECT status, count(*) FROM soniq_jobs GROUP BY 1")
    assert {r[0]: r[1] for r in statuses} == {"dead_letter": 1, "done": 600}
    ran = Counter(int(line) for line in runs.read_text().split())
    assert set(ran) == set(range(600))
