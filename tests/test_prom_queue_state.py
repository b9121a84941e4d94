"""Queue-state gauges: what they count, the cache, one reporter per fleet, and a query that
stays cheap however many finished jobs the table holds."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from soniq import QueueCount, QueueState, Soniq, sql
from soniq_prom import PrometheusConfig, metrics_of, render_async
from soniq_prom.queue_state import REPORTER_ROLE, build_snapshot
from tests.support.waiting import wait_until
from tests.test_prom_support import samples, value


@pytest.fixture
async def fleet(clean_db: str) -> AsyncIterator[list[Soniq]]:
    """Two apps on one database, as two processes of a fleet would be; no result caching."""
    apps = []
    for _ in range(2):
        app = Soniq(clean_db)
        app.instrument(prometheus=PrometheusConfig(queue_state_ttl=0))
        apps.append(app)
    yield apps
    for app in apps:
        layer = metrics_of(app)
        assert layer is not None
        await layer.close()
        await app.close()


async def _scrape(app: Soniq) -> list[Any]:
    return samples((await render_async(app)).body.decode())


def _reports(found: list[Any]) -> bool:
    return any(s.name == "soniq_workers_live" for s in found)


async def test_gauges_count_jobs_per_queue_and_state(
    fleet: list[Soniq], db: asyncpg.Connection[Any]
) -> None:
    app = fleet[0]

    @app.job(name="j")
    async def j() -> None:
        pass

    @app.job(name="idle", queue="idle")
    async def idle() -> None:
        pass

    ready = [await app.enqueue("j", scheduled_at=-20) for _ in range(3)]
    await app.enqueue("j", scheduled_at=3600)
    await app.enqueue("j", queue="other")
    await db.execute(
        "UPDATE soniq_jobs SET status = 'dead_letter', finished_at = now() WHERE id = $1",
        ready[0],
    )
    await db.execute(
        "UPDATE soniq_jobs SET status = 'processing', worker_id = 'w1' WHERE id = $1", ready[1]
    )
    await db.execute(
        "INSERT INTO soniq_workers (id, hostname, pid, concurrency, heartbeat_at) VALUES "
        "('w1', 'h', 1, 4, now()), ('w2', 'h', 2, 4, now() - interval '1 hour')"
    )
    found = await _scrape(app)
    jobs = {
        (s.labels["queue"], s.labels["state"]): s.value
        for s in found
        if s.name == "soniq_queue_jobs"
    }
    assert jobs == {
        ("default", "ready"): 1,
        ("default", "scheduled"): 1,
        ("default", "processing"): 1,
        ("default", "dead_letter"): 1,
        ("other", "ready"): 1,
        ("other", "scheduled"): 0,
        ("other", "processing"): 0,
        ("other", "dead_letter"): 0,
        # A registered queue with nothing in it still has its series.
        ("idle", "ready"): 0,
        ("idle", "scheduled"): 0,
        ("idle", "processing"): 0,
        ("idle", "dead_letter"): 0,
    }
    age = "soniq_queue_oldest_ready_age_seconds"
    assert 20 <= value(found, age, queue="default") < 120
    assert 0 <= value(found, age, queue="other") < 20
    assert value(found, age, queue="idle") == 0
    assert value(found, "soniq_workers_live") == 1  # w2's heartbeat is older than the lease


async def test_one_query_serves_the_scrapes_within_the_ttl(
    app: Soniq, db: asyncpg.Connection[Any]
) -> None:
    @app.job(name="j")
    async def j() -> None:
        pass

    app.instrument(prometheus=PrometheusConfig(queue_state_ttl=1.0))
    layer = metrics_of(app)
    assert layer is not None and layer.queue_state is not None
    try:
        await app.enqueue("j")
        for _ in range(5):
            found = await _scrape(app)
            assert value(found, "soniq_queue_jobs", state="ready") == 1
        assert layer.queue_state.queries == 1
        await app.enqueue("j")
        queries = layer.queue_state.queries

        async def refreshed() -> bool:
            return value(await _scrape(app), "soniq_queue_jobs", state="ready") == 2

        await wait_until(refreshed, timeout=10, interval=0.05, what="the cache to expire")
        assert layer.queue_state.queries == queries + 1
    finally:
        await layer.close()


async def test_only_one_process_of_a_fleet_reports_and_another_takes_over(
    fleet: list[Soniq], db: asyncpg.Connection[Any]
) -> None:
    first, second = fleet
    assert _reports(await _scrape(first))
    for _ in range(3):
        assert not _reports(await _scrape(second)), "sum() would count the queue twice"
        assert _reports(await _scrape(first))

    # The reporter's process dies (its connection with it): the next scrape elsewhere leads.
    key = first.fleet_role(REPORTER_ROLE).key  # a bigint lock: its high and low 32 bits
    holder = await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
        "AND objsubid = 1 AND granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        (key >> 32) & 0xFFFF_FFFF,
        key & 0xFFFF_FFFF,
    )
    assert holder is not None
    assert await db.fetchval("SELECT pg_terminate_backend($1)", holder)

    async def second_leads() -> bool:
        return _reports(await _scrape(second))

    await wait_until(second_leads, timeout=10, what="the second app to take over")
    assert not _reports(await _scrape(first))

    layer = metrics_of(second)
    assert layer is not None
    await layer.close()  # e.g. its worker shut down
    assert _reports(await _scrape(first))


async def test_a_slow_database_never_hangs_a_scrape(
    app: Soniq, db: asyncpg.Connection[Any]
) -> None:
    app.instrument(prometheus=PrometheusConfig(queue_state_ttl=0, queue_state_timeout=2.0))
    layer = metrics_of(app)
    assert layer is not None
    try:
        assert _reports(await _scrape(app))
        async with db.transaction():
            await db.execute("LOCK TABLE soniq_workers IN ACCESS EXCLUSIVE MODE")
            found = await _scrape(app)  # the query waits for the lock; the scrape does not
        assert not _reports(found)
        # At least this timeout; on a loaded machine the leader probe may time out as well.
        assert value(found, "soniq_telemetry_errors_total") >= 1
        assert _reports(await _scrape(app))  # the next scrape reports again
    finally:
        await layer.close()


async def test_the_query_never_reads_the_finished_rows(db: asyncpg.Connection[Any]) -> None:
    await db.execute("""
        INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, finished_at)
        SELECT gen_random_uuid(), 'j', 'q' || (i % 7), '{}', 'done', 1, now()
        FROM generate_series(1, 60000) AS i
    """)
    await db.execute("""
        INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts, scheduled_at)
        SELECT gen_random_uuid(), 'j', 'q' || (i % 7), '{}', 'queued', 1,
               now() + (i % 2) * interval '1 hour'
        FROM generate_series(1, 50) AS i
    """)
    await db.execute("ANALYZE soniq_jobs")
    plan = json.loads(
        await db.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql.QUEUE_METRICS, 30.0)
    )[0]
    nodes = list(_walk(plan["Plan"]))
    on_jobs = [n for n in nodes if n.get("Relation Name") == "soniq_jobs"]
    assert on_jobs and all(n["Node Type"] != "Seq Scan" for n in on_jobs), on_jobs
    assert {n["Index Name"] for n in on_jobs if "Index Name" in n} <= {
        "soniq_jobs_claim_queue",
        "soniq_jobs_claim_any",
        "soniq_jobs_due",
        "soniq_jobs_processing",
        "soniq_jobs_dead_letter",
        # Schema 4's listing indexes over live rows only (queued; dead letters by queue).
        "soniq_jobs_queued_created",
        "soniq_jobs_failed_queue",
    }
    table_pages = await db.fetchval("SELECT relpages FROM pg_class WHERE relname = 'soniq_jobs'")
    touched = plan["Plan"]["Shared Hit Blocks"] + plan["Plan"]["Shared Read Blocks"]
    assert touched < table_pages / 10, (touched, table_pages)


def _walk(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def test_queues_past_the_cap_are_summed_into_the_overflow_value() -> None:
    state = QueueState(
        tuple(
            QueueCount(q, "ready", n, age)
            for q, n, age in [("a", 1, 5.0), ("b", 2, 50.0), ("c", 3, 7.0), ("d", 4, 1.0)]
        ),
        workers_live=2,
    )
    snapshot = build_snapshot(state, known_queues=["d"], cap=2, overflow="__other__", taken_at=0)
    ready = {q: n for (q, state), n in snapshot.jobs.items() if state == "ready"}
    assert ready == {"d": 4, "a": 1, "__other__": 5}  # the registered queue keeps its label
    assert snapshot.oldest_ready_age == {"d": 1.0, "a": 5.0, "__other__": 50.0}
    assert snapshot.workers_live == 2
