"""Issue 2, point 4: the schema is versioned, idempotent, safe to run concurrently, checked."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from soniq import SchemaError, Soniq, migrations, sql


async def test_setup_creates_tables_and_is_idempotent(empty_database_url: str) -> None:
    async with Soniq(empty_database_url) as app:
        await app.setup()
        await app.setup()
    conn = await asyncpg.connect(empty_database_url)
    try:
        versions = await conn.fetch("SELECT version FROM soniq_schema_version ORDER BY version")
        tables = {
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'soniq_%'"
            )
        }
    finally:
        await conn.close()
    assert [r[0] for r in versions] == list(range(1, sql.SCHEMA_VERSION + 1))
    assert {"soniq_jobs", "soniq_workers", "soniq_schema_version"} <= tables


async def test_concurrent_setup_is_safe(empty_database_url: str) -> None:
    apps = [Soniq(empty_database_url) for _ in range(4)]
    try:
        await asyncio.gather(*(a.setup() for a in apps))
    finally:
        await asyncio.gather(*(a.close() for a in apps))
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM soniq_schema_version") == (
            sql.SCHEMA_VERSION
        )
    finally:
        await conn.close()


async def test_enqueue_without_schema_names_soniq_setup(empty_database_url: str) -> None:
    async with Soniq(empty_database_url) as app:

        @app.job()
        async def job() -> None: ...

        with pytest.raises(SchemaError, match="soniq setup"):
            await app.enqueue(job)


async def test_worker_without_schema_names_soniq_setup(empty_database_url: str) -> None:
    async with Soniq(empty_database_url) as app:
        with pytest.raises(SchemaError, match="soniq setup"):
            await app.run_worker(run_once=True, install_signal_handlers=False)


async def test_old_schema_is_refused_with_the_fix(empty_database_url: str) -> None:
    async with Soniq(empty_database_url) as app:
        await app.setup()
    conn = await asyncpg.connect(empty_database_url)
    await conn.execute("DELETE FROM soniq_schema_version WHERE version = $1", sql.SCHEMA_VERSION)
    await conn.execute("INSERT INTO soniq_schema_version (version) VALUES (0)")
    await conn.close()
    async with Soniq(empty_database_url) as app:

        @app.job()
        async def job() -> None: ...

        with pytest.raises(SchemaError, match=r"version .* needs .*soniq setup"):
            await app.enqueue(job)


async def test_claim_uses_the_partial_index(app: Soniq, db: asyncpg.Connection) -> None:
    # With many queued rows the claim must be an ordered index scan that stops at LIMIT,
    # not a sort of every ready row.
    await db.execute(
        """INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts)
           SELECT gen_random_uuid(), 'x', 'default', '{}', 1 FROM generate_series(1, 20000)"""
    )
    await db.execute("ANALYZE soniq_jobs")
    for queue_filter, queues in [(sql.QUEUE_FILTER_ONE, ["default"]), (sql.QUEUE_FILTER_ALL, None)]:
        query = sql.finish_and_claim(queue_filter)
        async with db.transaction():
            plan = await db.fetch(
                "EXPLAIN " + query,
                "w",
                [],
                [],
                [],
                [],
                [],
                [],
                [],
                10,
                ["x"],
                queues,
                [],
                10,
                "",
                "",
            )
            text = "\n".join(r[0] for r in plan)
        picked = text.split("CTE picked")[1].split("CTE claimed")[0]
        assert "Index Scan using soniq_jobs_claim" in picked, text
        assert "Sort" not in picked, text


async def test_migrating_an_older_schema_keeps_every_job(empty_database_url: str) -> None:
    """A database set up by an earlier version, with jobs in every state, comes through the
    later migrations (status text to an enum, indexes rebuilt) with each job as it was."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        async with conn.transaction():
            await conn.execute(sql.CREATE_VERSION_TABLE)
            for version, migration in enumerate(migrations.MIGRATIONS[:2], start=1):
                await conn.execute(migration)
                await conn.execute(sql.RECORD_VERSION, version)
        states = ["queued", "processing", "done", "dead_letter", "cancelled"]
        await conn.execute(
            """INSERT INTO soniq_jobs (id, job_name, queue, args, status, max_attempts)
               SELECT gen_random_uuid(), 'x', 'default', '{}', s, 3 FROM unnest($1::text[]) s""",
            states,
        )
        async with Soniq(empty_database_url) as app:
            await app.setup()
        version = await conn.fetchval("SELECT max(version) FROM soniq_schema_version")
        kept = await conn.fetch("SELECT status::text, max_attempts FROM soniq_jobs")
        indexes = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'soniq_jobs'"
            )
        }
        with pytest.raises(asyncpg.InvalidTextRepresentationError):
            await conn.execute("UPDATE soniq_jobs SET status = 'finished'")
    finally:
        await conn.close()
    assert version == sql.SCHEMA_VERSION
    assert sorted((r[0], r[1]) for r in kept) == sorted((s, 3) for s in states)
    assert {
        "soniq_jobs_claim_queue",
        "soniq_jobs_claim_any",
        "soniq_jobs_due",
        "soniq_jobs_processing",
        "soniq_jobs_dead_letter",
        "soniq_jobs_done",
        "soniq_jobs_failed",
        "soniq_jobs_queued_created",
        "soniq_jobs_failed_queue",
        "soniq_jobs_failed_name",
    } <= indexes
    assert "soniq_jobs_ended" not in indexes  # schema 7 replaced it (soniq_jobs_done, _failed)
