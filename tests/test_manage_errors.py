"""Issue 17, point 2: every attempt's error, bounded, on the job."""

from __future__ import annotations

from datetime import datetime, timezone

import asyncpg

from soniq import Soniq, sql, sql_liveness
from tests.support.procs import soniq


async def test_each_failed_attempt_is_kept_oldest_first(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job(name="e.flaky", max_retries=2, retry_backoff=0)
    async def flaky(n: int) -> str:
        from soniq import current_attempt

        attempt = current_attempt.get().attempt
        if attempt < 3:
            raise (KeyError if attempt == 1 else TimeoutError)(f"try {attempt}")
        return "ok"

    @app.job(name="e.fine")
    async def fine() -> None: ...

    job_id = await app.enqueue("e.flaky", n=1)
    fine_id = await app.enqueue("e.fine")
    started = datetime.now(timezone.utc)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "done" and job["result"] == "ok"
    errors = job["errors"]
    assert [(e["attempt"], e["error_type"], e["message"]) for e in errors] == [
        (1, "KeyError", "'try 1'"),
        (2, "TimeoutError", "try 2"),
    ]
    for entry in errors:
        assert set(entry) == {"attempt", "at", "worker_id", "error_type", "message", "traceback"}
        assert entry["at"] >= started.replace(microsecond=0) and entry["at"].tzinfo is not None
        assert entry["worker_id"] and entry["worker_id"].count(":") == 2
        assert entry["traceback"].startswith("Traceback") and "flaky" in entry["traceback"]
    assert errors[0]["at"] <= errors[1]["at"]
    # A job that never failed carries nothing (the column stays NULL).
    assert await db.fetchval("SELECT errors FROM soniq_jobs WHERE id = $1", fine_id) is None
    fine_job = await app.get_job(fine_id)
    assert fine_job is not None and fine_job["errors"] == []


async def test_history_is_bounded_and_each_entry_capped(app: Soniq) -> None:
    @app.job(name="e.always", max_retries=sql.ERRORS_KEPT + 4, retry_backoff=0)
    async def always() -> None:
        from soniq import current_attempt

        attempt = current_attempt.get().attempt
        raise ValueError(f"attempt {attempt} " + "x" * 9000)  # a traceback over the cap too

    job_id = await app.enqueue("e.always")
    await app.run_worker(run_once=True, install_signal_handlers=False)
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "dead_letter"
    errors = job["errors"]
    total = sql.ERRORS_KEPT + 5
    assert len(errors) == sql.ERRORS_KEPT
    assert [e["attempt"] for e in errors] == list(range(total - sql.ERRORS_KEPT + 1, total + 1))
    last = errors[-1]
    assert len(last["message"]) == sql.ERROR_MESSAGE_CAP
    assert last["message"].startswith(f"attempt {total} xxx")
    assert len(last["traceback"]) == sql.ERROR_TRACEBACK_CAP
    assert last["traceback"].rstrip().endswith("x")  # the end, where the error is, kept
    assert job["last_error"].startswith(f"ValueError: attempt {total}")


async def test_lease_recovery_joins_the_history(app: Soniq, db: asyncpg.Connection) -> None:
    """A job whose worker died is recorded as a WorkerLost attempt, with the lost worker."""
    await db.execute(
        """INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, attempts,
                                   started_at, worker_id)
           VALUES ('01900000-0000-7000-8000-000000000001', 'e.x', 'default', '{}',
                   'processing', 1, 1, now(), 'gone:1:dead'),
                  ('01900000-0000-7000-8000-000000000002', 'e.x', 'default', '{}',
                   'processing', 3, 1, now(), 'gone:1:dead')"""
    )
    recovered = await db.fetch(sql_liveness.RECOVER_LOST_JOBS, 3.0)
    assert {r["status"] for r in recovered} == {"dead_letter", "queued"}
    exhausted = await app.get_job("01900000-0000-7000-8000-000000000001")
    again = await app.get_job("01900000-0000-7000-8000-000000000002")
    assert exhausted is not None and again is not None
    assert exhausted["status"] == "dead_letter" and again["status"] == "queued"
    for job in (exhausted, again):
        (entry,) = job["errors"]
        assert (entry["attempt"], entry["error_type"], entry["worker_id"]) == (
            1,
            "WorkerLost",
            "gone:1:dead",
        )
        assert entry["message"] == job["last_error"].removeprefix("WorkerLost: ")
        assert entry["traceback"] is None
    assert "attempts exhausted" in exhausted["errors"][0]["message"]


async def test_dead_letter_listing_shows_every_attempt(app: Soniq, clean_db: str) -> None:
    @app.job(name="e.dead", max_retries=1, retry_backoff=0)
    async def dead() -> None:
        raise RuntimeError("gateway down")

    job_id = await app.enqueue("e.dead")
    await app.run_worker(run_once=True, install_signal_handlers=False)
    listed = await app.list_dead_letters()
    assert [len(j["errors"]) for j in listed] == [2]
    out = soniq("dead-letter", "list", database_url=clean_db)
    assert out.returncode == 0, out.stderr
    assert job_id in out.stdout
    assert "attempt 1 at " in out.stdout and "attempt 2 at " in out.stdout
    assert out.stdout.count("RuntimeError: gateway down") == 3  # last error + each attempt
