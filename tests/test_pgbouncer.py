"""Soniq behind a real PgBouncer in transaction mode (pgbouncer=True): enqueue, drain, retries,
delayed jobs, LISTEN on a direct URL or polling, the fleet role and the queue-state gauges.

PgBouncer runs with three server connections per database for many more clients, so the
statements of one Soniq connection land on different server sessions all the time: a
prepared statement or session lock kept across transactions would break at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from soniq import JobContext, Soniq
from soniq_prom import PrometheusConfig, metrics_of, render_async
from tests.support.pgbouncer import pgbouncer
from tests.support.waiting import running_worker, wait_status, wait_until
from tests.test_prom_support import samples, value


@pytest.fixture(scope="module")
def bouncer_url(database_url: str) -> Iterator[str]:
    with pgbouncer(database_url) as url:
        yield url


def make(url: str, **settings: Any) -> Soniq:
    settings.setdefault("poll_interval", 0.2)
    app = Soniq(url, pgbouncer=True, lease_seconds=3, grace_period=5, **settings)

    @app.job(name="pgb.add")
    async def add(x: int) -> int:
        return x + 1

    @app.job(name="pgb.flaky", max_retries=2, retry_backoff=0.05)
    async def flaky(ctx: JobContext) -> int:
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt} fails")
        return ctx.attempt

    @app.job(name="pgb.sync")
    def sync_job(x: int) -> int:
        return x * 2

    @app.job(name="pgb.once", unique=True)
    async def once(x: int) -> int:
        return x

    return app


@pytest.fixture
async def bounced(clean_db: str, bouncer_url: str) -> AsyncIterator[Soniq]:
    app = make(bouncer_url)
    yield app
    await app.close()


async def test_the_server_sees_no_prepared_statement_kept(bounced: Soniq, bouncer_url: str) -> None:
    """Many enqueues and claims over three shared server sessions: with prepared statements
    kept, one would soon run on a session that does not have it."""
    ids = [await bounced.enqueue("pgb.add", x=i) for i in range(60)]
    ids += await bounced.enqueue_many("pgb.add", [{"x": i} for i in range(100)])
    ids += [await asyncio.to_thread(bounced.enqueue_sync, "pgb.sync", x=i) for i in range(30)]
    ids += await asyncio.to_thread(bounced.enqueue_many_sync, "pgb.sync", [{"x": 1}] * 20)
    # Unique jobs: several statements in a transaction, on each side.
    once = [await asyncio.to_thread(bounced.enqueue_sync, "pgb.once", x=i % 5) for i in range(20)]
    once += [await bounced.enqueue("pgb.once", x=i % 5) for i in range(20)]
    assert len(set(once)) == 5
    ids += set(once)
    await drain(bounced)
    rows = await (await bounced.pool()).fetch(
        "SELECT status::text, count(*) FROM soniq_jobs GROUP BY 1"
    )
    assert {r["status"]: r["count"] for r in rows} == {"done": len(ids)}
    conn = await asyncpg.connect(bouncer_url, statement_cache_size=0)
    try:
        # The server sessions PgBouncer hands out hold no statement Soniq prepared.
        for _ in range(6):
            names = await conn.fetch("SELECT name FROM pg_prepared_statements")
            assert names == []
    finally:
        await conn.close()


async def test_retries_and_delayed_jobs(bounced: Soniq) -> None:
    flaky = await bounced.enqueue("pgb.flaky")
    later = await bounced.enqueue("pgb.add", x=1, scheduled_at=timedelta(seconds=1))
    started = time.monotonic()
    async with running_worker(bounced):
        job = await wait_status(bounced, flaky, "done")
        assert job["attempts"] == 3 and job["result"] == 3
        await wait_status(bounced, later, "done")
    assert time.monotonic() - started >= 0.9  # not before it was due


async def test_workers_poll_without_a_direct_url(clean_db: str, bouncer_url: str) -> None:
    app = make(bouncer_url, poll_interval=0.3)
    try:
        async with running_worker(app) as worker:
            assert "soniq-listen" not in [t.get_name() for t in worker._background]
            job = await app.enqueue("pgb.add", x=41)
            assert (await wait_status(app, job, "done"))["result"] == 42
    finally:
        await app.close()


async def test_workers_listen_on_the_direct_url(clean_db: str, bouncer_url: str) -> None:
    # A poll every 30 s: only a notification can wake the worker within the deadline.
    app = make(bouncer_url, poll_interval=30, listen_database_url=clean_db)
    try:
        async with running_worker(app) as worker:
            assert "soniq-listen" in [t.get_name() for t in worker._background]
            await wait_until(lambda: worker._wake.is_set() is False, what="an idle worker")
            for x in range(3):
                job = await app.enqueue("pgb.add", x=x)
                await wait_status(app, job, "done", timeout=8)
            sync_job = await asyncio.to_thread(app.enqueue_sync, "pgb.add", x=9)
            await wait_status(app, sync_job, "done", timeout=8)
    finally:
        await app.close()


async def test_one_fleet_role_holder_through_pgbouncer(clean_db: str, bouncer_url: str) -> None:
    one, two = make(bouncer_url), make(bouncer_url)
    try:
        first, second = one.fleet_role("reporter"), two.fleet_role("reporter")
        assert await first.try_take()
        for _ in range(5):  # asked again and again, over whichever server session comes
            assert not await second.try_take()
        await first.release()
        await wait_until(second.try_take, what="the role to pass on")
        assert second.held and not await first.try_take()
        await second.release()
    finally:
        await one.close()
        await two.close()


async def test_queue_state_gauges_through_pgbouncer(clean_db: str, bouncer_url: str) -> None:
    app = make(bouncer_url)
    app.instrument(prometheus=PrometheusConfig(queue_state_ttl=0))
    try:
        await app.enqueue_many("pgb.add", [{"x": i} for i in range(4)])
        await app.enqueue("pgb.add", x=0, scheduled_at=3600)
        found = samples((await render_async(app)).body.decode())
        assert value(found, "soniq_queue_jobs", queue="default", state="ready") == 4
        assert value(found, "soniq_queue_jobs", queue="default", state="scheduled") == 1
        assert value(found, "soniq_workers_live") == 0
    finally:
        layer = metrics_of(app)
        assert layer is not None
        await layer.close()
        await app.close()


async def test_a_schema_of_its_own_through_pgbouncer(clean_db: str, bouncer_url: str) -> None:
    """PgBouncer keeps no search_path, so the schema is in every statement's names."""
    app = make(bouncer_url, schema="bounced")
    try:
        await app.setup()
        job = await app.enqueue("pgb.add", x=1)
        sync_job = await asyncio.to_thread(app.enqueue_sync, "pgb.add", x=2)
        await drain(app)
        for job_id, result in ((job, 2), (sync_job, 3)):
            assert (await app.get_job(job_id) or {})["result"] == result
    finally:
        pool = await app.pool()
        await pool.execute("DROP SCHEMA bounced CASCADE")
        await app.close()


async def drain(app: Soniq) -> None:
    """Run a worker until nothing is left to claim."""
    await asyncio.wait_for(
        app.run_worker(concurrency=8, run_once=True, install_signal_handlers=False), 60
    )


async def test_awaited_results_through_pgbouncer(clean_db: str, bouncer_url: str) -> None:
    """get_result(wait=...) polls without a direct URL, and LISTENs on it when given."""
    for listen in (None, clean_db):
        app = make(bouncer_url, listen_database_url=listen)
        try:
            async with running_worker(app):
                job = await app.enqueue("pgb.add", x=5)
                assert await app.get_result(job, wait=15) == 6
                slow = await app.enqueue("pgb.add", x=1, scheduled_at=3600)
                with pytest.raises(TimeoutError):
                    await app.get_result(slow, wait=0.6)
        finally:
            await app.close()


async def test_schedules_through_pgbouncer(clean_db: str, bouncer_url: str) -> None:
    app = make(bouncer_url, poll_interval=0.3)
    fired: list[str] = []

    @app.periodic(every=1, schedule_name="pgb.tick")
    async def tick(ctx: JobContext) -> None:
        fired.append(ctx.job_id)

    try:
        async with running_worker(app):
            await wait_until(lambda: len(fired) >= 2, timeout=20, what="two fires of pgb.tick")
        assert len(set(fired)) == len(fired)  # one job per fire time
    finally:
        pool = await app.pool()
        await pool.execute("DELETE FROM soniq_schedules WHERE name = 'pgb.tick'")
        await app.close()
