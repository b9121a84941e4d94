"""Soniq(schema=...): two apps in one database, each in its own schema, see, wake and block
nothing of each other; migrations and caller connections respect it."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from soniq import ConfigurationError, SchemaError, Soniq, migrations, sql
from soniq.schema import channel, qualify
from tests.support.waiting import running_worker, wait_status, wait_until


def make(url: str, schema: str | None, ran: list[str]) -> Soniq:
    app = Soniq(url, schema=schema, poll_interval=30, lease_seconds=3, grace_period=5)

    @app.job(name="shared.name")
    async def job(tag: str) -> str:
        ran.append(f"{schema}:{tag}")
        return tag

    return app


@pytest.fixture
async def two(empty_database_url: str) -> AsyncIterator[tuple[Soniq, Soniq, list[str]]]:
    ran: list[str] = []
    a, b = make(empty_database_url, "app_a", ran), make(empty_database_url, "app_b", ran)
    await a.setup()
    await b.setup()
    yield a, b, ran
    await a.close()
    await b.close()


async def test_every_table_is_in_the_schema(
    two: tuple[Soniq, Soniq, list[str]], empty_database_url: str
) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        found = await conn.fetch(
            "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname LIKE 'soniq%' "
            "ORDER BY 1, 2"
        )
        types = await conn.fetch(
            "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE t.typname = 'soniq_job_status' ORDER BY 1"
        )
        functions = await conn.fetch(
            "SELECT n.nspname, p.proname FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname LIKE 'soniq%' "
            "ORDER BY 1, 2"
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in functions] == [
        ("app_a", "soniq_claim_limited"),
        ("app_b", "soniq_claim_limited"),
    ]
    schemas = {r["nspname"] for r in found}
    assert schemas == {"app_a", "app_b"}  # nothing in public
    tables = {(r["nspname"], r["relname"]) for r in found if r["relkind"] == "r"}
    for schema in ("app_a", "app_b"):
        assert {(schema, t) for t in ("soniq_jobs", "soniq_workers", "soniq_schema_version")} <= (
            tables
        )
    assert [r["nspname"] for r in types] == ["app_a", "app_b"]
    # Setup again changes nothing (idempotent in the schema too).
    a, _, _ = two
    await a.setup()


async def test_two_apps_share_a_database_without_seeing_each_other(
    two: tuple[Soniq, Soniq, list[str]],
) -> None:
    a, b, ran = two
    ja = await a.enqueue("shared.name", tag="a1")
    jb = await b.enqueue("shared.name", tag="b1")
    assert await a.get_job(jb) is None and await b.get_job(ja) is None
    assert [q["ready"] for q in await a.queue_status()] == [1]
    await drain(a)
    await wait_status(a, ja, "done", timeout=1)
    assert ran == ["app_a:a1"]
    assert (await b.get_job(jb) or {})["status"] == "queued"  # a's worker never took it
    state = await b.queue_state()
    assert [(c.queue, c.state, c.jobs) for c in state.counts if c.state == "ready"] == [
        ("default", "ready", 1)
    ]


async def test_a_schemas_notifications_wake_only_its_workers(
    two: tuple[Soniq, Soniq, list[str]], empty_database_url: str
) -> None:
    a, b, _ = two
    heard: dict[str, list[str]] = {"app_a": [], "app_b": []}
    conn = await asyncpg.connect(empty_database_url)
    try:
        for schema in heard:
            await conn.add_listener(
                channel(schema), lambda _c, _p, ch, payload: heard[ch.split(":")[1]].append(payload)
            )
        await a.enqueue("shared.name", tag="x")
        await wait_until(lambda: heard["app_a"], what="app_a's notification")
        await conn.execute("SELECT 1")  # one more round trip: any stray notification arrives
        assert heard == {"app_a": ["default"], "app_b": []}
    finally:
        await conn.close()
    # A worker of b (poll_interval 30 s) wakes for b's enqueue at once, by its own channel.
    async with running_worker(b):
        job = await b.enqueue("shared.name", tag="b-wake")
        await wait_status(b, job, "done", timeout=10)


async def test_fleet_roles_are_per_schema(two: tuple[Soniq, Soniq, list[str]]) -> None:
    a, b, _ = two
    ra, rb = a.fleet_role("reporter"), b.fleet_role("reporter")
    try:
        assert await ra.try_take() and await rb.try_take()  # different fleets, one name
        again = a.fleet_role("reporter")
        assert not await again.try_take()  # the same fleet: one holder
    finally:
        await ra.release()
        await rb.release()


async def test_caller_connections_write_into_the_schema(
    two: tuple[Soniq, Soniq, list[str]], empty_database_url: str
) -> None:
    a, _, _ = two
    conn = await asyncpg.connect(empty_database_url)  # search_path: public
    try:
        async with conn.transaction():
            job = await a.enqueue("shared.name", tag="in-tx", connection=conn)
        assert await conn.fetchval("SELECT count(*) FROM app_a.soniq_jobs WHERE id = $1", job)
    finally:
        await conn.close()

    def sync_side() -> str:
        with psycopg.connect(empty_database_url) as pconn:
            job_id: str = a.enqueue_sync("shared.name", tag="psycopg", connection=pconn)
        return job_id

    job2 = await asyncio.to_thread(sync_side)
    own = await asyncio.to_thread(a.enqueue_sync, "shared.name", tag="own")
    for job_id in (job2, own):
        assert (await a.get_job(job_id) or {})["status"] == "queued"
    # Unique jobs' statements too, on each kind of connection (the caller's asyncpg one was
    # once left unqualified).
    conn = await asyncpg.connect(empty_database_url)
    try:
        async with conn.transaction():
            held = await a.enqueue("shared.name", tag="u1", dedup_key="k", connection=conn)
    finally:
        await conn.close()

    def sync_unique() -> str:
        with psycopg.connect(empty_database_url) as pconn:
            job_id: str = a.enqueue_sync("shared.name", tag="u2", dedup_key="k", connection=pconn)
        return job_id

    assert await asyncio.to_thread(sync_unique) == held
    assert await asyncio.to_thread(a.enqueue_sync, "shared.name", tag="u3", dedup_key="k") == held


async def test_migrating_a_schema_keeps_its_jobs(empty_database_url: str) -> None:
    """A schema at version 1 with a job in it is migrated in place to the current version."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute("CREATE SCHEMA keep; SET search_path TO keep")
        await conn.execute(sql.CREATE_VERSION_TABLE)
        await conn.execute(migrations.MIGRATIONS[0])
        await conn.execute(sql.RECORD_VERSION, 1)
        await conn.execute(
            "INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts) "
            "VALUES (gen_random_uuid(), 'shared.name', 'default', '{\"tag\": \"old\"}', 2)"
        )
    finally:
        await conn.close()
    ran: list[str] = []
    app = make(empty_database_url, "keep", ran)
    plain = make(empty_database_url, None, ran)
    try:
        with pytest.raises(SchemaError, match="version 1"):
            await app.enqueue("shared.name", tag="too early")
        await app.setup()
        await drain(app)
        assert ran == ["keep:old"]
        await app.enqueue("shared.name", tag="new")
        # The default place has no tables: an app without the schema says so.
        with pytest.raises(SchemaError, match="soniq setup"):
            await plain.enqueue("shared.name", tag="nowhere")
    finally:
        await app.close()
        await plain.close()
    conn = await asyncpg.connect(empty_database_url)
    try:
        versions = await conn.fetch("SELECT version FROM keep.soniq_schema_version ORDER BY 1")
        assert [v["version"] for v in versions] == list(range(1, sql.SCHEMA_VERSION + 1))
        assert await conn.fetchval("SELECT to_regclass('public.soniq_jobs')") is None
    finally:
        await conn.close()


def test_schema_names_are_checked_where_written() -> None:
    for bad in ("Jobs", "my-jobs", "1jobs", "pg_jobs", "a" * 41, ""):
        with pytest.raises(ConfigurationError, match="schema"):
            Soniq("postgresql://127.0.0.1/x", schema=bad)
    assert Soniq("postgresql://127.0.0.1/x", schema="jobs").settings.db_schema == "jobs"


def test_qualifying_is_idempotent_and_leaves_other_names() -> None:
    text = "SELECT * FROM soniq_jobs JOIN soniq_workers w ON true -- soniq_jobs_claim_any"
    once = qualify(text, "q")
    assert once == (
        "SELECT * FROM q.soniq_jobs JOIN q.soniq_workers w ON true -- soniq_jobs_claim_any"
    )
    assert qualify(once, "q") == once
    assert qualify(text, None) is text


async def drain(app: Soniq) -> None:
    """Run a worker until nothing is left to claim."""
    await asyncio.wait_for(
        app.run_worker(concurrency=8, run_once=True, install_signal_handlers=False), 60
    )


async def test_connection_settings_change_only_before_connecting(
    empty_database_url: str,
) -> None:
    ran: list[str] = []
    app = make(empty_database_url, None, ran)
    app.configure(schema="later")  # as the Django contrib does when Django starts
    try:
        await app.setup()
        job = await app.enqueue("shared.name", tag="t")
        pool = await app.pool()
        assert await pool.fetchval("SELECT count(*) FROM later.soniq_jobs WHERE id = $1", job)
        app.configure(concurrency=3)  # not a connection setting: fine at any time
        with pytest.raises(ConfigurationError, match=r"db_schema.*connected"):
            app.configure(schema="other")
    finally:
        await app.close()


def test_every_table_type_and_function_the_migrations_create_is_qualified() -> None:
    created: set[str] = set()
    for migration in migrations.MIGRATIONS:
        created |= set(
            re.findall(
                r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:UNLOGGED\s+|MATERIALIZED\s+)?"
                r"(?:TABLE|TYPE|FUNCTION|PROCEDURE|VIEW|SEQUENCE)"
                r"(?:\s+IF\s+NOT\s+EXISTS)?\s+(soniq_\w+)",
                migration,
                re.IGNORECASE,
            )
        )
    # The pattern still finds each kind of CREATE (else it would check nothing).
    assert {"soniq_jobs", "soniq_job_status", "soniq_claim_limited"} <= created, created
    missing = created - set(sql.SCHEMA_NAMES)
    assert not missing, f"add {sorted(missing)} to sql.SCHEMA_NAMES"
    for migration in migrations.MIGRATIONS:
        for name in created:
            # No bare use of a table, type or function is left in a qualified migration.
            assert not re.search(rf"(?<![\w.]){name}\b(?!:)", qualify(migration, "s")), name


async def test_concurrent_setups_create_one_schema(empty_database_url: str) -> None:
    apps = [Soniq(empty_database_url, schema="racing") for _ in range(4)]
    try:
        await asyncio.gather(*(a.setup() for a in apps))  # one creates, the others wait
        assert await apps[0].queue_status() == []
    finally:
        for a in apps:
            await a.close()


def test_every_channel_the_statements_notify_is_known() -> None:
    """A channel missing from sql.CHANNELS would be shared by every schema."""
    import soniq

    texts = []
    for module in ("sql", "sql_manage"):
        found = getattr(soniq, module, None) or __import__(f"soniq.{module}", fromlist=["x"])
        texts += [v for v in vars(found).values() if isinstance(v, str)]
        texts += [m for v in vars(found).values() if isinstance(v, list) for m in v]
    texts.append(sql.finish_and_claim(sql.QUEUE_FILTER_ALL))
    notified = {c for t in texts for c in re.findall(r"pg_notify\('(\w+)'", t)}
    assert notified and notified <= set(sql.CHANNELS), notified - set(sql.CHANNELS)


async def test_awaited_results_in_a_schema(
    two: tuple[Soniq, Soniq, list[str]], empty_database_url: str
) -> None:
    ran: list[str] = []
    a = make(empty_database_url, "app_a", ran)
    a.configure(poll_interval=0.5)  # the claim is not what this test is about
    try:
        async with running_worker(a):
            job = await a.enqueue("shared.name", tag="awaited")
            # The waiter hears the finish on the schema's results channel.
            assert await a.get_result(job, wait=15) == "awaited"
    finally:
        await a.close()


async def test_limited_and_rated_queues_in_a_schema(two: tuple[Soniq, Soniq, list[str]]) -> None:
    """The limited claim (a function the migrations create) is called in the schema: once it
    was called bare, and with no Soniq in the search_path the worker failed to claim."""
    a, _, ran = two
    await a.set_queue_limit("lim", 1)
    await a.set_queue_rate("rated", 50)
    ids = [await a.enqueue("shared.name", queue="lim", tag=f"l{i}") for i in range(3)]
    ids += [await a.enqueue("shared.name", queue="rated", tag=f"r{i}") for i in range(3)]
    async with running_worker(a, concurrency=4):
        for job_id in ids:
            await wait_status(a, job_id, "done", timeout=10)
    assert sorted(ran) == [f"app_a:{t}" for t in ("l0", "l1", "l2", "r0", "r1", "r2")]


async def test_limited_queues_of_two_apps_claim_only_their_own_jobs(
    empty_database_url: str,
) -> None:
    """A public-schema app and a schema app in one database, each with a limit on a queue of
    the same name: each worker claims its own app's jobs only (the schema app's worker once
    called the public app's function and took its jobs)."""
    ran: list[str] = []
    public, jobs = make(empty_database_url, None, ran), make(empty_database_url, "jobs", ran)
    try:
        for app in (public, jobs):
            await app.setup()
            await app.set_queue_limit("lim", 1)
        theirs = [await public.enqueue("shared.name", queue="lim", tag=f"p{i}") for i in range(3)]
        ours = [await jobs.enqueue("shared.name", queue="lim", tag=f"j{i}") for i in range(3)]
        async with running_worker(jobs, concurrency=4):
            for job_id in ours:
                await wait_status(jobs, job_id, "done", timeout=10)
        assert sorted(ran) == ["jobs:j0", "jobs:j1", "jobs:j2"]
        for job_id in theirs:
            assert (await public.get_job(job_id) or {})["status"] == "queued"
        async with running_worker(public, concurrency=4):
            for job_id in theirs:
                await wait_status(public, job_id, "done", timeout=10)
        assert sorted(ran) == ["None:p0", "None:p1", "None:p2", "jobs:j0", "jobs:j1", "jobs:j2"]
    finally:
        await public.close()
        await jobs.close()


async def test_a_schema_set_up_before_functions_were_qualified_claims_limited_queues(
    empty_database_url: str,
) -> None:
    """Setups before soniq_claim_limited was in sql.SCHEMA_NAMES created it by its bare name
    under the schema's search_path, so in the schema: where the qualified call finds it."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        async with conn.transaction():
            await conn.execute("CREATE SCHEMA old; SET LOCAL search_path TO old")
            await conn.execute(qualify(sql.CREATE_VERSION_TABLE, "old"))
            for version, migration in enumerate(migrations.MIGRATIONS, start=1):
                then = qualify(migration, "old")
                for function in ("soniq_claim_limited", "soniq_notify_insert"):
                    then = then.replace(f"old.{function}", function)  # as they were
                await conn.execute(then)
                await conn.execute(qualify(sql.RECORD_VERSION, "old"), version)
        assert await conn.fetchval("SELECT to_regproc('old.soniq_claim_limited') IS NOT NULL")
    finally:
        await conn.close()
    ran: list[str] = []
    app = make(empty_database_url, "old", ran)
    try:
        await app.setup()  # nothing to migrate: the version is current
        await app.set_queue_limit("lim", 1)
        job = await app.enqueue("shared.name", queue="lim", tag="old-db")
        await drain(app)
        assert (await app.get_job(job) or {})["status"] == "done"
        assert ran == ["old:old-db"]
    finally:
        await app.close()
