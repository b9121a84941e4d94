"""connection=: the row is written in the caller's transaction, whatever its driver, and the
workers hear of it at commit. Each driver rolls back once and commits once, against real
PostgreSQL (Django's connection: examples/django's tests, run by test_django_example.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import psycopg2
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from soniq import ConfigurationError, DuplicateJob, JobArgumentsError, Soniq, Unique
from soniq.connections import pyformat
from tests.support.waiting import wait_until


@pytest.fixture
def txapp(app: Soniq) -> Soniq:
    @app.job(name="tx.job")
    async def job(n: int) -> None:
        return None

    return app


class Heard:
    """A LISTEN connection on Soniq's channel and a second connection that sees committed
    rows only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.payloads: list[str] = []

    async def __aenter__(self) -> Heard:
        self.conn = await asyncpg.connect(self.url)
        await self.conn.add_listener("soniq_jobs", lambda *a: self.payloads.append(a[3]))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.close()

    async def visible(self, job_id: str) -> bool:
        return bool(
            await self.conn.fetchval("SELECT count(*) FROM soniq_jobs WHERE id = $1", job_id)
        )

    async def quiet(self) -> bool:
        await self.conn.execute("SELECT 1")  # a round trip: a pending notification arrives
        return not self.payloads


def plain_url(url: str, driver: str) -> str:
    return url.replace("postgresql://", f"postgresql+{driver}://", 1)


# -- the callers: one connection of each driver, and its transaction ---------------------------


class Caller:
    """A caller's connection of one driver inside an open transaction. ``call`` runs the app's
    async method with it, or the ``_sync`` twin in a thread for a sync driver."""

    is_async = True
    handle: Any

    async def open(self, url: str) -> None:
        raise NotImplementedError

    async def finish(self, commit: bool) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def call(self, app: Soniq, method: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["connection"] = self.handle
        if self.is_async:
            return await getattr(app, method)(*args, **kwargs)
        return await asyncio.to_thread(getattr(app, f"{method}_sync"), *args, **kwargs)


class SyncCaller(Caller):
    """A sync driver's: its own calls run in a thread, as a view's would."""

    is_async = False

    def open_(self, url: str) -> None:
        raise NotImplementedError

    def finish_(self, commit: bool) -> None:
        self.handle.commit() if commit else self.handle.rollback()

    def close_(self) -> None:
        self.handle.close()

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.open_, url)

    async def finish(self, commit: bool) -> None:
        await asyncio.to_thread(self.finish_, commit)

    async def close(self) -> None:
        await asyncio.to_thread(self.close_)


class AsyncpgCaller(Caller):
    async def open(self, url: str) -> None:
        self.handle = await asyncpg.connect(url)
        self.tx = self.handle.transaction()
        await self.tx.start()

    async def finish(self, commit: bool) -> None:
        await (self.tx.commit() if commit else self.tx.rollback())

    async def close(self) -> None:
        await self.handle.close()


class PsycopgAsyncCaller(Caller):
    async def open(self, url: str) -> None:
        self.handle = await psycopg.AsyncConnection.connect(url)  # the enqueue begins it

    async def finish(self, commit: bool) -> None:
        await (self.handle.commit() if commit else self.handle.rollback())

    async def close(self) -> None:
        await self.handle.close()


class SQLAlchemyAsyncCaller(Caller):
    def __init__(self, driver: str, kind: str) -> None:
        self.driver, self.kind = driver, kind

    async def open(self, url: str) -> None:
        self.engine = create_async_engine(plain_url(url, self.driver))
        if self.kind == "session":
            self.handle = AsyncSession(self.engine)
            await self.handle.execute(text("SELECT 1"))  # the session's transaction has begun
        else:  # no statement of the caller's first: the enqueue itself begins the transaction
            self.handle = await self.engine.connect()

    async def finish(self, commit: bool) -> None:
        await (self.handle.commit() if commit else self.handle.rollback())

    async def close(self) -> None:
        await self.handle.close()
        await self.engine.dispose()


class PsycopgCaller(SyncCaller):
    def __init__(self, autocommit: bool = False) -> None:
        self.autocommit = autocommit

    def open_(self, url: str) -> None:
        self.handle = psycopg.connect(url, autocommit=self.autocommit)
        if self.autocommit:  # a transaction the caller opened by hand
            self.handle.execute("BEGIN")

    def finish_(self, commit: bool) -> None:
        self.handle.execute("COMMIT" if commit else "ROLLBACK")


class Psycopg2Caller(SyncCaller):
    """psycopg2, as Django and Flask apps very often have it: not in autocommit, the first
    statement (the enqueue) begins the transaction."""

    def __init__(self, autocommit: bool = False) -> None:
        self.autocommit = autocommit

    def open_(self, url: str) -> None:
        self.handle = psycopg2.connect(url)
        if self.autocommit:  # a transaction the caller opened by hand
            self.handle.autocommit = True
            with self.handle.cursor() as cur:
                cur.execute("BEGIN")

    def finish_(self, commit: bool) -> None:
        with self.handle.cursor() as cur:
            cur.execute("COMMIT" if commit else "ROLLBACK")


class SQLAlchemyCaller(SyncCaller):
    def __init__(self, kind: str, driver: str = "psycopg") -> None:
        self.kind, self.driver = kind, driver

    def open_(self, url: str) -> None:
        self.engine = create_engine(plain_url(url, self.driver))
        self.handle = Session(self.engine) if self.kind == "session" else self.engine.connect()

    def close_(self) -> None:
        self.handle.close()
        self.engine.dispose()


CALLERS: dict[str, Callable[[], Caller]] = {
    "asyncpg": AsyncpgCaller,
    "psycopg-async": PsycopgAsyncCaller,
    "sqlalchemy-async-session-asyncpg": lambda: SQLAlchemyAsyncCaller("asyncpg", "session"),
    "sqlalchemy-async-session-psycopg": lambda: SQLAlchemyAsyncCaller("psycopg", "session"),
    "sqlalchemy-async-connection-asyncpg": lambda: SQLAlchemyAsyncCaller("asyncpg", "connection"),
    "sqlalchemy-async-connection-psycopg": lambda: SQLAlchemyAsyncCaller("psycopg", "connection"),
    "psycopg": PsycopgCaller,
    "psycopg-autocommit-begin": lambda: PsycopgCaller(autocommit=True),
    "psycopg2": Psycopg2Caller,
    "psycopg2-autocommit-begin": lambda: Psycopg2Caller(autocommit=True),
    "sqlalchemy-session-psycopg": lambda: SQLAlchemyCaller("session"),
    "sqlalchemy-connection-psycopg": lambda: SQLAlchemyCaller("connection"),
    "sqlalchemy-session-psycopg2": lambda: SQLAlchemyCaller("session", "psycopg2"),
    "sqlalchemy-connection-psycopg2": lambda: SQLAlchemyCaller("connection", "psycopg2"),
}
# Django's connection: examples/django's tests (test_django_example.py).


@pytest.fixture(params=list(CALLERS))
async def caller(request: pytest.FixtureRequest, clean_db: str) -> AsyncIterator[Caller]:
    made = CALLERS[request.param]()
    await made.open(clean_db)
    try:
        yield made
    finally:
        await made.close()


async def in_transaction(
    caller: Caller, url: str, commit: bool, write: Callable[[], Awaitable[list[str]]]
) -> None:
    """``write()`` in the caller's open transaction; nobody sees its rows or hears of them
    until it commits, and then everyone does (rolled back: nobody ever)."""
    async with Heard(url) as heard:
        ids = await write()
        # Inside the open transaction: nobody else sees the rows, nobody has been told.
        assert ids and not any([await heard.visible(i) for i in ids])
        assert await heard.quiet()
        await caller.finish(commit)
        if commit:
            assert all([await heard.visible(i) for i in ids])
            await wait_until(lambda: heard.payloads == ["default"], what="the notification")
        else:
            assert not any([await heard.visible(i) for i in ids])
            assert await heard.quiet()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_the_row_is_written_in_the_callers_transaction(
    txapp: Soniq, clean_db: str, caller: Caller, commit: bool
) -> None:
    async def write() -> list[str]:
        one = await caller.call(txapp, "enqueue", "tx.job", n=1)
        # A batch (the array statement) and a scheduled job in the same transaction.
        many = await caller.call(txapp, "enqueue_many", "tx.job", [{"n": 2}, {"n": 3}])
        later = await caller.call(txapp, "enqueue", "tx.job", n=4, scheduled_at=60)
        return [one, *many, later]

    await in_transaction(caller, clean_db, commit, write)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_unique_jobs_in_the_callers_transaction(
    txapp: Soniq, clean_db: str, caller: Caller, commit: bool
) -> None:
    """Deduped against the transaction's own rows; a DuplicateJob undoes its own enqueue only
    (a savepoint) and the transaction goes on; a rolled-back key was never held."""

    @txapp.job(name="tx.once", unique=Unique(key=lambda a: "k"))
    async def once(n: int) -> None: ...

    @txapp.job(name="tx.strict", unique=Unique(key=lambda a: a["k"], on_conflict="raise"))
    async def strict(k: str) -> None: ...

    async def write() -> list[str]:
        first = await caller.call(txapp, "enqueue_result", "tx.once", n=1)
        again = await caller.call(txapp, "enqueue_result", "tx.once", n=2)
        assert not first.deduplicated and (again.id, again.deduplicated) == (first.id, True)
        a = await caller.call(txapp, "enqueue", "tx.strict", k="a")
        with pytest.raises(DuplicateJob) as caught:  # b is written, then undone with it
            await caller.call(txapp, "enqueue_many", "tx.strict", [{"k": "b"}, {"k": "a"}])
        assert caught.value.existing_id == a
        c = await caller.call(txapp, "enqueue", "tx.strict", k="c")  # the transaction goes on
        return [first.id, a, c]

    await in_transaction(caller, clean_db, commit, write)
    async with Heard(clean_db) as heard:
        count = await heard.conn.fetchval("SELECT count(*) FROM soniq_jobs")
        assert count == (3 if commit else 0)  # never b
    after = await txapp.enqueue_result("tx.once", n=3)
    assert after.deduplicated is commit


async def test_unique_jobs_on_an_autocommit_connection_take_a_transaction_of_their_own(
    txapp: Soniq, clean_db: str, db: asyncpg.Connection
) -> None:
    """No transaction open: each statement would commit by itself, so a unique enqueue opens
    one, and a batch that raises leaves nothing behind."""

    @txapp.job(name="tx.strict", unique=Unique(key=lambda a: a["k"], on_conflict="raise"))
    async def strict(k: str) -> None: ...

    conn = await asyncio.to_thread(psycopg.connect, clean_db, autocommit=True)
    conn2 = await asyncio.to_thread(psycopg2.connect, clean_db)
    conn2.autocommit = True
    aconn = await psycopg.AsyncConnection.connect(clean_db, autocommit=True)
    try:
        a = await asyncio.to_thread(txapp.enqueue_sync, "tx.strict", k="a", connection=conn)
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 1  # committed
        for sync_conn in (conn, conn2):
            with pytest.raises(DuplicateJob):
                await asyncio.to_thread(
                    txapp.enqueue_many_sync,
                    "tx.strict",
                    [{"k": "b"}, {"k": "a"}],
                    connection=sync_conn,
                )
        with pytest.raises(DuplicateJob):
            await txapp.enqueue_many("tx.strict", [{"k": "c"}, {"k": "a"}], connection=aconn)
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 1
        statuses = {c.info.transaction_status for c in (conn, conn2, aconn)}
        assert statuses == {0}  # idle
        assert await txapp.enqueue("tx.strict", k="d", connection=aconn) != a
        e = await asyncio.to_thread(txapp.enqueue_sync, "tx.strict", k="e", connection=conn2)
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE id = $1", e) == 1
    finally:
        await asyncio.to_thread(conn.close)
        await asyncio.to_thread(conn2.close)
        await aconn.close()


# -- wrong use ------------------------------------------------------------------------------------


async def test_a_connection_of_the_wrong_kind_is_named(txapp: Soniq, clean_db: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite3\.Connection"):
        import sqlite3

        await txapp.enqueue("tx.job", n=1, connection=sqlite3.connect(":memory:"))
    for connect in (psycopg.connect, psycopg2.connect):
        conn = await asyncio.to_thread(connect, clean_db)
        try:
            with pytest.raises(ConfigurationError, match="enqueue_sync"):
                await txapp.enqueue("tx.job", n=1, connection=conn)
        finally:
            await asyncio.to_thread(conn.close)
    aconn = await asyncpg.connect(clean_db)
    try:
        with pytest.raises(ConfigurationError, match=r"await app\.enqueue"):
            await asyncio.to_thread(txapp.enqueue_sync, "tx.job", n=1, connection=aconn)
    finally:
        await aconn.close()


async def test_refused_values_raise_the_usual_error(txapp: Soniq, caller: Caller) -> None:
    """Each driver (and SQLAlchemy around it) raises its own DataError: all mean the same."""
    with pytest.raises(JobArgumentsError, match="cannot be stored"):
        await caller.call(txapp, "enqueue", "tx.job", n="nul \x00")


def test_placeholders_are_rewritten_once_per_statement() -> None:
    text_, order = pyformat("SELECT $2, $1, '5%', $2")
    assert text_ == "SELECT %s, %s, '5%%', %s" and order == (1, 0, 1)
    assert pyformat("SELECT $2, $1, '5%', $2") is pyformat("SELECT $2, $1, '5%', $2")
