"""Issue 21 point 1 for unique jobs: enqueue_sync, enqueue_result_sync and enqueue_many_sync
dedupe, replace and raise as the async calls do, on Soniq's own psycopg connections and under
racing threads, against real PostgreSQL (a caller's transaction: test_connections.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from soniq import DuplicateJob, EnqueueResult, JobArgumentsError, Soniq, Unique
from soniq_otel import OtelConfig
from soniq_prom import render_async
from tests.support.waiting import wait_until
from tests.test_prom_support import samples, value


@pytest.fixture
def uapp(app: Soniq) -> Soniq:
    @app.job(name="u.send", unique=True)
    async def send(to: str, n: int = 0) -> None: ...

    @app.job(name="u.index", unique=Unique(key=lambda a: a["doc"], on_conflict="replace"))
    async def index(doc: str, version: int) -> None: ...

    @app.job(name="u.charge", unique=Unique(key=lambda a: str(a["order"]), on_conflict="raise"))
    async def charge(order: int) -> None: ...

    @app.job(name="u.report", unique=Unique(states=("queued", "processing", "done"), within=60))
    async def report(day: str) -> None: ...

    @app.job(name="u.plain")
    async def plain(x: int) -> None: ...

    return app


# Each step: (call, job, arguments, options). ``db`` steps are SQL run between the calls.
Step = tuple[str, str, Any, dict[str, Any]]

SCRIPTS: dict[str, list[Step]] = {
    "unique_true": [
        ("one", "u.send", {"to": "a", "n": 1}, {}),
        ("result", "u.send", {"n": 1, "to": "a"}, {}),  # other key order: the same job
        ("result", "u.send", {"to": "b", "n": 1}, {}),
        ("many", "u.send", [{"to": "a", "n": 1}, {"to": "c"}, {"to": "c"}, {"to": "d"}], {}),
        ("db", "UPDATE soniq_jobs SET status = 'processing' WHERE args->>'to' = 'a'", None, {}),
        ("result", "u.send", {"to": "a", "n": 1}, {}),  # only while queued: a new job
    ],
    "replace": [
        ("result", "u.index", {"doc": "d1", "version": 1}, {"scheduled_at": 60}),
        ("result", "u.index", {"doc": "d1", "version": 2}, {"scheduled_at": 600}),
        ("many", "u.index", [{"doc": "d2", "version": 1}, {"doc": "d2", "version": 2}], {}),
        ("many", "u.index", [{"doc": "d1", "version": 3}, {"doc": "d3", "version": 1}], {}),
        ("db", "UPDATE soniq_jobs SET status = 'processing' WHERE args->>'doc' = 'd1'", None, {}),
        ("result", "u.index", {"doc": "d1", "version": 4}, {}),  # running: not replaced
    ],
    "raise": [
        ("one", "u.charge", {"order": 1}, {}),
        ("one", "u.charge", {"order": 1}, {}),
        ("many", "u.charge", [{"order": 2}, {"order": 3}, {"order": 1}], {}),
        ("many", "u.charge", [{"order": 4}, {"order": 4}], {}),
        ("result", "u.charge", {"order": 2}, {}),  # the failed batches wrote nothing
    ],
    "states_within_dedup_key": [
        ("one", "u.report", {"day": "mon"}, {}),
        ("db", "UPDATE soniq_jobs SET status = 'done'", None, {}),
        ("result", "u.report", {"day": "mon"}, {}),
        ("db", "UPDATE soniq_jobs SET unique_until = now() - interval '1 second'", None, {}),
        ("result", "u.report", {"day": "mon"}, {}),  # past within: a new job takes the key
        ("one", "u.plain", {"x": 1}, {"dedup_key": "once"}),
        ("result", "u.plain", {"x": 2}, {"dedup_key": "once"}),
        ("result", "u.plain", {"x": 1}, {}),  # without dedup_key: not unique
    ],
}


class Ordinals:
    """Job ids as the order they were first seen in, so two runs compare."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def __call__(self, job_id: str) -> int:
        return self.seen.setdefault(job_id, len(self.seen))


async def run_script(
    app: Soniq, db: asyncpg.Connection, script: list[Step], sync: bool
) -> tuple[list[Any], list[tuple[Any, ...]]]:
    """The script's outcomes (ids as ordinals) and the rows it left; the table is emptied."""
    calls: dict[str, Callable[..., Any]] = (
        {"one": app.enqueue_sync, "result": app.enqueue_result_sync, "many": app.enqueue_many_sync}
        if sync
        else {"one": app.enqueue, "result": app.enqueue_result, "many": app.enqueue_many}
    )
    ordinal = Ordinals()
    outcomes: list[Any] = []
    for call, job, args, options in script:
        if call == "db":
            await db.execute(job)
            continue
        positional = (job, args) if call == "many" else (job,)
        keywords = options if call == "many" else {**args, **options}
        try:
            if sync:
                got = await asyncio.to_thread(calls[call], *positional, **keywords)
            else:
                got = await calls[call](*positional, **keywords)
        except DuplicateJob as exc:
            outcomes.append(("DuplicateJob", ordinal(exc.existing_id)))
            continue
        if isinstance(got, EnqueueResult):
            outcomes.append((ordinal(got.id), got.deduplicated, got.replaced))
        elif isinstance(got, list):
            outcomes.append([ordinal(i) for i in got])
        else:
            outcomes.append(ordinal(got))
    rows = await db.fetch(
        "SELECT id::text, job_name, args::text, status::text, unique_key IS NULL AS released, "
        "round(extract(epoch FROM scheduled_at - created_at) / 10) AS due_10s "
        "FROM soniq_jobs ORDER BY seq"
    )
    await db.execute("TRUNCATE soniq_jobs")
    return outcomes, [(ordinal(r[0]), *tuple(r)[1:]) for r in rows]


@pytest.mark.parametrize("script", SCRIPTS, ids=list(SCRIPTS))
async def test_sync_calls_return_and_write_what_the_async_calls_do(
    uapp: Soniq, db: asyncpg.Connection, script: str
) -> None:
    expected = await run_script(uapp, db, SCRIPTS[script], sync=False)
    got = await run_script(uapp, db, SCRIPTS[script], sync=True)
    assert got == expected
    assert any(o not in (0, [0]) for o in expected[0])  # the script did something


async def test_the_asserted_outcomes(uapp: Soniq, db: asyncpg.Connection) -> None:
    """What the parity test compares, spelled out once for the sync side."""
    outcomes, rows = await run_script(uapp, db, SCRIPTS["raise"], sync=True)
    assert outcomes == [
        0,
        ("DuplicateJob", 0),
        ("DuplicateJob", 0),
        ("DuplicateJob", 1),  # twice in one batch: the batch's own first job (never written)
        (2, False, False),
    ]
    assert [r[0] for r in rows] == [0, 2]
    outcomes, rows = await run_script(uapp, db, SCRIPTS["replace"], sync=True)
    assert outcomes[:2] == [(0, False, False), (0, True, True)]
    assert outcomes[2] == [1, 1] and outcomes[3] == [0, 2]
    assert outcomes[4] == (0, True, False)
    assert [(r[0], r[2]) for r in rows] == [
        (0, '{"doc": "d1", "version": 3}'),  # the batch replaced it; the running one kept it
        (1, '{"doc": "d2", "version": 2}'),  # the last of the batch's duplicates won
        (2, '{"doc": "d3", "version": 1}'),
    ]


async def test_racing_threads_on_one_key_end_with_one_job(
    uapp: Soniq, db: asyncpg.Connection
) -> None:
    """Twelve threads (more than the pool's ten connections) enqueue one key at once, each
    many times, some in batches: the index leaves one job and every thread gets its id."""

    @uapp.job(name="u.race", unique=Unique(key=lambda a: "k"))
    async def race(n: int) -> None: ...

    threads = 12
    barrier = threading.Barrier(threads)
    seen: set[str] = set()
    errors: list[BaseException] = []

    def produce(i: int) -> None:
        try:
            barrier.wait(30)
            for round_ in range(6):
                if (i + round_) % 3 == 0:
                    seen.update(uapp.enqueue_many_sync("u.race", [{"n": i}, {"n": -i}]))
                elif (i + round_) % 3 == 1:
                    seen.add(uapp.enqueue_result_sync("u.race", n=i).id)
                else:
                    seen.add(uapp.enqueue_sync("u.race", n=i))
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    # Threads of their own: the default executor has fewer workers than the barrier waits for.
    workers = [threading.Thread(target=produce, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    await asyncio.to_thread(lambda: [t.join(60) for t in workers])
    assert not errors, errors
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE job_name = 'u.race'") == 1
    assert seen == {await db.fetchval("SELECT id::text FROM soniq_jobs")}


async def test_a_held_key_makes_the_sync_call_wait_for_the_holders_transaction(
    uapp: Soniq, clean_db: str, db: asyncpg.Connection
) -> None:
    holder = await asyncpg.connect(clean_db)
    try:
        tr = holder.transaction()
        await tr.start()
        held = await uapp.enqueue("u.send", to="x", connection=holder)
        waiting = asyncio.ensure_future(
            asyncio.to_thread(uapp.enqueue_result_sync, "u.send", to="x")
        )
        await wait_until(lambda: waiting_on_a_lock(db), what="the sync enqueue to wait")
        assert not waiting.done()
        await tr.rollback()
        result = await asyncio.wait_for(waiting, 10)
        assert not result.deduplicated and result.id != held  # the holder never existed
        # Committed, the same key dedupes to it.
        async with holder.transaction():
            again = await uapp.enqueue("u.send", to="y", connection=holder)
        assert await asyncio.to_thread(uapp.enqueue_sync, "u.send", to="y") == again
    finally:
        await holder.close()


async def waiting_on_a_lock(db: asyncpg.Connection) -> bool:
    return bool(
        await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO soniq_jobs%'"
        )
    )


async def test_bad_keys_and_refused_values_raise_as_the_async_calls_do(
    uapp: Soniq, db: asyncpg.Connection
) -> None:
    @uapp.job(name="u.bad", unique=Unique(key=lambda a: a.get("k")))  # type: ignore[arg-type,return-value]
    async def bad(k: object = None) -> None: ...

    for call in (
        lambda: uapp.enqueue_sync(bad, k=None),
        lambda: uapp.enqueue_result_sync(bad, k="x", dedup_key=""),
        lambda: uapp.enqueue_many_sync(bad, [{"k": "x"}, {"k": None}]),
    ):
        with pytest.raises(JobArgumentsError, match=r"non-empty string|dedup_key"):
            await asyncio.to_thread(call)
    with pytest.raises(JobArgumentsError, match="cannot be stored"):
        await asyncio.to_thread(uapp.enqueue_sync, "u.send", to="nul \x00")
    with pytest.raises(JobArgumentsError, match="cannot be stored"):
        await uapp.enqueue("u.send", to="nul \x00")
    with pytest.raises(RuntimeError, match=r"await app\.enqueue_result\("):
        uapp.enqueue_result_sync("u.send", to="a")
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 0
    # The pool's connection went back clean: the next unique enqueue works.
    assert not (await asyncio.to_thread(uapp.enqueue_result_sync, "u.send", to="a")).deduplicated


async def test_dedupes_show_in_the_span_and_the_counter_from_sync_calls(uapp: Soniq) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    uapp.instrument(otel=OtelConfig(tracer_provider=provider), prometheus=True)

    first = await asyncio.to_thread(uapp.enqueue_sync, "u.send", to="a")
    assert await asyncio.to_thread(uapp.enqueue_sync, "u.send", to="a") == first
    await asyncio.to_thread(uapp.enqueue_many_sync, "u.send", [{"to": "a"}, {"to": "b"}])
    sends = [s for s in exporter.get_finished_spans() if s.name == "send u.send"]
    assert [s.attributes.get("soniq.job.deduplicated") for s in sends[:2]] == [False, True]
    assert sends[1].attributes["messaging.message.id"] == first
    assert sends[2].attributes["soniq.job.deduplicated_count"] == 1
    found = samples((await render_async(uapp)).body.decode())
    assert value(found, "soniq_jobs_deduplicated_total", job_name="u.send") == 2
    assert value(found, "soniq_jobs_enqueued_total", job_name="u.send") == 2
