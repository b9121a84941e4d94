"""Issue 16, points 4-6: pausing queues and fleet-wide limits, stored in the database."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import asyncpg
import pytest
from click.testing import CliRunner

from soniq import ConfigurationError, Soniq
from soniq.cli import cli
from tests.apps.control_app import MAX_OVERLAP, SCHEMA
from tests.support.procs import start_soniq
from tests.support.waiting import running_worker, wait_status, wait_until


async def stays(check: object, seconds: float) -> None:
    """Assert ``check()`` holds at every look for ``seconds`` (a window, not a wait)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert await check()  # type: ignore[operator]
        await asyncio.sleep(0.05)


async def test_paused_queue_waits_and_runs_after_resume(app: Soniq, db: asyncpg.Connection) -> None:
    ran: list[str] = []

    @app.job(name="q.mail", queue="mail")
    async def mail(to: str) -> None:
        ran.append(to)

    @app.job(name="q.other", queue="other")
    async def other() -> None: ...

    async with running_worker(app) as worker:
        await app.pause_queue("mail")
        # Within a second every worker knows (NOTIFY); enqueue still works meanwhile.
        await wait_until(lambda: "mail" in worker._view.controls, timeout=1.0, what="the pause")
        job_id = await app.enqueue(mail, to="a")
        other_id = await app.enqueue(other)
        await wait_status(app, other_id, "done")  # the worker claims; other queues run

        async def still_queued() -> bool:
            return await db.fetchval("SELECT status FROM soniq_jobs WHERE id=$1", job_id) == (
                "queued"
            )

        await stays(still_queued, 1.0)
        assert ran == []
        await app.resume_queue("mail")
        await wait_status(app, job_id, "done", timeout=2.0)
    assert ran == ["a"]


async def test_an_all_queues_worker_skips_a_paused_queue_even_with_a_stale_view(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="q.p", queue="p")
    async def p() -> None: ...

    async with running_worker(app, queues=["p", "x"]) as worker:
        await app.pause_queue("p")
        await wait_until(lambda: worker._view.active, timeout=1.0, what="the pause")
        # Another queue limited too: the claim reads soniq_queues itself.
        await app.set_queue_limit("x", 1)
        job_id = await app.enqueue(p)

        async def still_queued() -> bool:
            return await db.fetchval("SELECT status FROM soniq_jobs WHERE id=$1", job_id) == (
                "queued"
            )

        await stays(still_queued, 0.6)
        await app.resume_queue("p")
        await wait_status(app, job_id, "done", timeout=2.0)


async def test_three_worker_processes_never_run_more_than_the_limit(
    clean_db: str, db: asyncpg.Connection
) -> None:
    from tests.apps.control_app import app as control_app

    await db.execute(SCHEMA)
    await db.execute("TRUNCATE control_runs")
    producer = Soniq(clean_db)
    producer.registry = control_app.registry
    await producer.set_queue_limit("limited", 2)
    workers = [
        start_soniq(
            "worker", "tests.apps.control_app:app", "--concurrency", "10", database_url=clean_db
        )
        for _ in range(3)
    ]
    try:
        await producer.enqueue_many("control.overlap", [{"ms": 50} for _ in range(60)])

        async def drained() -> bool:
            return bool(
                await db.fetchval("SELECT count(*) = 0 FROM soniq_jobs WHERE status <> 'done'")
            )

        await wait_until(drained, timeout=60, interval=0.2, what="60 limited jobs done")
        assert await db.fetchval("SELECT count(*) FROM control_runs") == 60
        # Never more than the limit at once, and the limit used (not one at a time).
        assert await db.fetchval(MAX_OVERLAP, "limited") == 2
    finally:
        await producer.close()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.communicate(timeout=30)


async def test_a_dead_workers_slots_come_back_when_its_lease_ends(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="q.lim", queue="lim")
    async def lim() -> None: ...

    await app.set_queue_limit("lim", 1)
    # A worker that died holding a job of the queue: its row is processing, its beat stale.
    held = await app.enqueue(lim)
    await db.execute(
        "INSERT INTO soniq_workers (id, hostname, pid, concurrency, heartbeat_at) "
        "VALUES ('dead', 'h', 1, 1, now() - interval '1 hour')"
    )
    await db.execute(
        "UPDATE soniq_jobs SET status = 'processing', worker_id = 'dead', attempts = 1, "
        "started_at = now() WHERE id = $1",
        held,
    )
    waiting = await app.enqueue(lim)
    async with running_worker(app):
        # Both run once the lease (3 s in tests) hands the dead worker's job back.
        await wait_status(app, waiting, "done", timeout=3 * app.settings.lease_seconds)
        await wait_status(app, held, "done", timeout=3 * app.settings.lease_seconds)


async def test_rate_limit_spaces_starts_across_the_fleet(
    app: Soniq, db: asyncpg.Connection
) -> None:
    starts: list[float] = []

    @app.job(name="q.rated", queue="rated")
    async def rated() -> None:
        starts.append(time.monotonic())

    await app.set_queue_rate("rated", 10)
    await db.execute("UPDATE soniq_queues SET tokens = 0, refilled_at = now()")
    ids = await app.enqueue_many(rated, [{} for _ in range(8)])
    async with running_worker(app, concurrency=8):
        for job_id in ids:
            await wait_status(app, job_id, "done", timeout=5)
    span = max(starts) - min(starts)
    assert span >= 0.5  # 8 jobs at 10/s from an empty bucket take about 0.7 s, not 0


def test_cli_pause_resume_limit_and_status(clean_db: str) -> None:
    runner = CliRunner()
    url = ["--database-url", clean_db]
    out = runner.invoke(cli, ["queues", "pause", "mail", *url])
    assert out.exit_code == 0, out.output
    assert "mail: paused" in out.output
    out = runner.invoke(cli, ["queues", "limit", "mail", "3", *url])
    assert "paused, limit 3" in out.output
    status = runner.invoke(cli, ["status", *url])
    assert "mail" in status.output and "paused, limit 3" in status.output
    listed = json.loads(runner.invoke(cli, ["queues", "list", "--json", *url]).stdout)
    assert listed[0]["name"] == "mail" and listed[0]["paused"] and listed[0]["concurrency"] == 3
    out = runner.invoke(cli, ["queues", "resume", "mail", *url])
    assert "mail: running, limit 3" in out.output
    out = runner.invoke(cli, ["queues", "limit", "mail", "none", *url])
    assert out.stdout.strip() == "mail: running"
    bad = runner.invoke(cli, ["queues", "limit", "mail", "0", *url])
    assert bad.exit_code != 0 and "1 or more" in bad.output
    bad = runner.invoke(cli, ["queues", "limit", "mail", "two", *url])
    assert bad.exit_code != 0 and "whole number" in bad.output


def test_cli_rate_sets_removes_and_refuses(clean_db: str) -> None:
    runner = CliRunner()
    url = ["--database-url", clean_db]
    out = runner.invoke(cli, ["queues", "rate", "mail", "2.5", *url])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == "mail: running, rate 2.5/s"
    out = runner.invoke(cli, ["queues", "rate", "mail", "NONE", *url])
    assert out.stdout.strip() == "mail: running"
    bad = runner.invoke(cli, ["queues", "rate", "mail", "fast", *url])
    assert bad.exit_code != 0 and "'fast' is not a number; give jobs per second" in bad.output
    # Parsed, then refused by the app's own check (not by click).
    bad = runner.invoke(cli, ["queues", "rate", "mail", "inf", *url])
    assert bad.exit_code != 0 and "must be a positive number" in bad.output
    listed = json.loads(runner.invoke(cli, ["queues", "list", "--json", *url]).stdout)
    assert listed[0]["name"] == "mail" and listed[0]["rate"] is None


async def test_bad_queue_controls_are_refused_and_nothing_is_written(
    app: Soniq, db: asyncpg.Connection
) -> None:
    for call in (
        lambda: app.set_queue_limit("q", 0),
        lambda: app.set_queue_limit("q", 2.5),  # type: ignore[arg-type]
        lambda: app.set_queue_rate("q", -1),
        lambda: app.pause_queue(7),  # type: ignore[arg-type]
        lambda: app.pause_queue(""),
        lambda: app.resume_queue(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError):
            await call()
    assert await db.fetchval("SELECT count(*) FROM soniq_queues") == 0
