"""Issue 16, points 1 and 6: unique jobs, enforced by the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import pytest

from soniq import ConfigurationError, DuplicateJob, JobArgumentsError, Soniq, Unique
from soniq.testing import Clock


async def count_jobs(db: asyncpg.Connection, name: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE job_name = $1", name))


async def test_unique_true_dedupes_on_name_and_arguments_while_queued(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="u.send", unique=True)
    async def send(to: str, n: int = 0) -> None: ...

    first = await app.enqueue(send, to="a", n=1)
    again = await app.enqueue_result(send, n=1, to="a")  # same arguments, other order
    assert again.id == first and again.deduplicated and not again.replaced
    other = await app.enqueue_result(send, to="b", n=1)
    assert not other.deduplicated and other.id != first
    assert await count_jobs(db, "u.send") == 2
    # unique=True covers the queued state only: once it runs, a new one may be enqueued.
    await db.execute("UPDATE soniq_jobs SET status = 'processing' WHERE id = $1", first)
    third = await app.enqueue_result(send, to="a", n=1)
    assert not third.deduplicated and third.id != first
    assert await count_jobs(db, "u.send") == 3


async def test_states_and_within_decide_how_long_a_key_is_held(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="u.report", unique=Unique(states=("queued", "processing", "done"), within=60))
    async def report(day: str) -> None: ...

    first = await app.enqueue(report, day="mon")
    for status in ("processing", "done"):
        await db.execute(
            "UPDATE soniq_jobs SET status = $2::soniq_job_status WHERE id = $1", first, status
        )
        assert (await app.enqueue_result(report, day="mon")).id == first
    # Past ``within`` the key is free again, whatever the state.
    await db.execute(
        "UPDATE soniq_jobs SET unique_until = now() - interval '1 second' WHERE id = $1", first
    )
    later = await app.enqueue_result(report, day="mon")
    assert not later.deduplicated and later.id != first
    # The new job holds the key now; the old one gave it up.
    assert await db.fetchval("SELECT unique_key IS NULL FROM soniq_jobs WHERE id = $1", first)
    assert (await app.enqueue_result(report, day="mon")).id == later.id


async def test_dedup_key_and_key_function(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job(name="u.sync", unique=Unique(key=lambda args: str(args["account"])))
    async def sync(account: int, full: bool = False) -> None: ...

    @app.job(name="u.plain")
    async def plain(x: int) -> None: ...

    a = await app.enqueue(sync, account=7)
    assert await app.enqueue(sync, account=7, full=True) == a  # key ignores ``full``
    p = await app.enqueue(plain, x=1, dedup_key="once")
    assert await app.enqueue(plain, x=2, dedup_key="once") == p
    assert await app.enqueue(plain, x=1) != p  # without dedup_key: not unique
    # Keys are per job name: the same dedup_key on another job is another key.
    assert await app.enqueue(sync, account=8, dedup_key="once") != p
    assert await count_jobs(db, "u.plain") == 2


async def test_replace_debounces_the_queued_job(app: Soniq, db: asyncpg.Connection) -> None:
    @app.job(name="u.index", unique=Unique(key=lambda a: a["doc"], on_conflict="replace"))
    async def index(doc: str, version: int) -> None: ...

    first = await app.enqueue(index, doc="d1", version=1, scheduled_at=60)
    result = await app.enqueue_result(index, doc="d1", version=2, scheduled_at=600)
    assert result.id == first and result.deduplicated and result.replaced
    row = await db.fetchrow(
        "SELECT args, scheduled_at - now() AS due FROM soniq_jobs WHERE id = $1", first
    )
    assert '"version": 2' in row["args"]
    assert timedelta(seconds=500) < row["due"] <= timedelta(seconds=600)
    assert await count_jobs(db, "u.index") == 1
    # A running holder is not replaced: the existing id comes back, untouched.
    await db.execute("UPDATE soniq_jobs SET status = 'processing' WHERE id = $1", first)
    again = await app.enqueue_result(index, doc="d1", version=3)
    assert again.id == first and again.deduplicated and not again.replaced
    assert '"version": 2' in await db.fetchval("SELECT args FROM soniq_jobs WHERE id=$1", first)


async def test_raise_carries_the_existing_id_and_writes_nothing(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="u.charge", unique=Unique(key=lambda a: str(a["order"]), on_conflict="raise"))
    async def charge(order: int) -> None: ...

    first = await app.enqueue(charge, order=1)
    with pytest.raises(DuplicateJob) as caught:
        await app.enqueue(charge, order=1)
    assert caught.value.existing_id == first
    # A batch with one duplicate writes none of its jobs.
    with pytest.raises(DuplicateJob):
        await app.enqueue_many(charge, [{"order": 2}, {"order": 3}, {"order": 1}])
    with pytest.raises(DuplicateJob):
        await app.enqueue_many(charge, [{"order": 4}, {"order": 4}])
    assert await count_jobs(db, "u.charge") == 1


async def test_enqueue_many_dedupes_inside_the_batch_and_against_the_table(
    app: Soniq, db: asyncpg.Connection
) -> None:
    @app.job(name="u.touch", unique=True)
    async def touch(n: int) -> None: ...

    existing = await app.enqueue(touch, n=1)
    ids = await app.enqueue_many(touch, [{"n": 1}, {"n": 2}, {"n": 2}, {"n": 3}, {"n": 1}])
    assert ids[0] == existing and ids[4] == existing
    assert ids[1] == ids[2] and len({ids[1], ids[3], existing}) == 3
    assert await count_jobs(db, "u.touch") == 3


async def test_concurrent_producers_racing_on_one_key_end_with_one_job(
    clean_db: str, db: asyncpg.Connection
) -> None:
    """Ten producers with their own connections enqueue the same key at once, each many times
    (some in batches): the index leaves exactly one job, and every producer gets its id."""
    producers = [Soniq(clean_db) for _ in range(10)]
    for p in producers:
        p.job(name="u.race", unique=Unique(key=lambda a: "k"))(_race_job)
    try:
        start = asyncio.Event()

        async def produce(p: Soniq, i: int) -> set[str]:
            await start.wait()
            got = set()
            for round_ in range(5):
                if (i + round_) % 2:
                    got.add(await p.enqueue("u.race", n=i))
                else:
                    got.update(await p.enqueue_many("u.race", [{"n": i}, {"n": -i}]))
            return got

        tasks = [asyncio.create_task(produce(p, i)) for i, p in enumerate(producers)]
        await asyncio.sleep(0)
        start.set()
        seen = set().union(*await asyncio.gather(*tasks))
    finally:
        await asyncio.gather(*(p.close() for p in producers))
    assert await count_jobs(db, "u.race") == 1
    assert seen == {str(await db.fetchval("SELECT id FROM soniq_jobs"))}


async def _race_job(n: int) -> None: ...


async def test_transactional_enqueue_waits_for_the_holder_and_survives_rollback(
    app: Soniq, clean_db: str, db: asyncpg.Connection
) -> None:
    @app.job(name="u.tx", unique=Unique(key=lambda a: "k"))
    async def tx(n: int) -> None: ...

    other = await asyncpg.connect(clean_db)
    try:
        # Rolled back: the key was never held.
        tr = other.transaction()
        await tr.start()
        await app.enqueue(tx, n=1, connection=other)
        await tr.rollback()
        assert await count_jobs(db, "u.tx") == 0
        tr = other.transaction()
        await tr.start()
        held = await app.enqueue(tx, n=2, connection=other)
        # A second producer meets the uncommitted holder and waits for its transaction.
        waiting = asyncio.create_task(app.enqueue_result(tx, n=3))
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done  # blocked on the open transaction, as the index decides
        await tr.rollback()
        result = await asyncio.wait_for(waiting, 10)
        assert not result.deduplicated and result.id != held  # the holder never existed
        assert await count_jobs(db, "u.tx") == 1
        # Inside a committed transaction, the same key dedupes to the committed job.
        async with other.transaction():
            assert await app.enqueue(tx, n=4, connection=other) == result.id
    finally:
        await other.close()


async def test_bad_unique_options_are_refused_before_anything_is_written(
    app: Soniq, db: asyncpg.Connection
) -> None:
    with pytest.raises(ConfigurationError, match=r"on_conflict='skip'.*'return_existing'"):
        Unique(on_conflict="skip")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unknown status 'running'"):
        Unique(states=("queued", "running"))
    with pytest.raises(ConfigurationError, match="within"):
        Unique(within=-5)
    with pytest.raises(ConfigurationError, match="key="):
        Unique(key="account")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unique="):
        app.job(unique="yes")  # type: ignore[arg-type]

    @app.job(name="u.bad", unique=Unique(key=lambda a: a.get("k")))  # type: ignore[arg-type,return-value]
    async def bad(k: object = None) -> None: ...

    with pytest.raises(JobArgumentsError, match="non-empty string"):
        await app.enqueue(bad, k=None)
    with pytest.raises(JobArgumentsError, match="dedup_key"):
        await app.enqueue(bad, k="x", dedup_key="")
    assert await count_jobs(db, "u.bad") == 0


async def test_within_follows_the_testing_clock(app: Soniq, soniq_clock: Clock) -> None:
    @app.job(name="u.clocked", unique=Unique(within=timedelta(minutes=5)))
    async def clocked(n: int) -> None: ...

    soniq_clock.attach(app)
    first = await app.enqueue(clocked, n=1)
    await soniq_clock.advance(timedelta(minutes=4))
    assert await app.enqueue(clocked, n=1) == first
    await soniq_clock.advance(timedelta(minutes=2))
    assert await app.enqueue(clocked, n=1) != first  # past ``within``: a new job
