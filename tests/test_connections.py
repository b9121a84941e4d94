"""connection=: the row is written in the caller's transaction, whatever its driver, and the
workers hear of it at commit. Each driver rolls back once and commits once, against real
PostgreSQL (Django's connection: examples/django's tests, run by test_django_example.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from soniq import ConfigurationError, JobArgumentsError, Soniq
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


# -- async drivers: await app.enqueue(..., connection=) ----------------------------------------
async def run_async(
    app: Soniq, url: str, commit: bool, enqueue_in: Callable[[Heard], Awaitable[tuple[str, Any]]]
) -> None:
    async with Heard(url) as heard:
        job_id, finish = await enqueue_in(heard)
        # Inside the open transaction: nobody else sees the row, nobody has been told.
        assert not await heard.visible(job_id)
        assert await heard.quiet()
        await finish(commit)
        if commit:
            assert await heard.visible(job_id)
            await wait_until(lambda: heard.payloads == ["default"], what="the notification")
        else:
            assert not await heard.visible(job_id)
            assert await heard.quiet()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_asyncpg_connection(txapp: Soniq, clean_db: str, commit: bool) -> None:
    conn = await asyncpg.connect(clean_db)
    try:

        async def enqueue_in(heard: Heard) -> tuple[str, Any]:
            tx = conn.transaction()
            await tx.start()
            job_id = await txapp.enqueue("tx.job", n=1, connection=conn)

            async def finish(ok: bool) -> None:
                await (tx.commit() if ok else tx.rollback())

            return job_id, finish

        await run_async(txapp, clean_db, commit, enqueue_in)
    finally:
        await conn.close()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_psycopg_async_connection(txapp: Soniq, clean_db: str, commit: bool) -> None:
    conn = await psycopg.AsyncConnection.connect(clean_db)
    try:

        async def enqueue_in(heard: Heard) -> tuple[str, Any]:
            job_id = await txapp.enqueue("tx.job", n=1, connection=conn)
            # A batch in the same transaction, through the array statement.
            await txapp.enqueue_many("tx.job", [{"n": 2}, {"n": 3}], connection=conn)

            async def finish(ok: bool) -> None:
                await (conn.commit() if ok else conn.rollback())

            return job_id, finish

        await run_async(txapp, clean_db, commit, enqueue_in)
    finally:
        await conn.close()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_sqlalchemy_async_session(
    txapp: Soniq, clean_db: str, commit: bool, driver: str
) -> None:
    engine = create_async_engine(plain_url(clean_db, driver))
    try:
        async with AsyncSession(engine) as session:

            async def enqueue_in(heard: Heard) -> tuple[str, Any]:
                await session.execute(text("SELECT 1"))  # the session's transaction has begun
                job_id = await txapp.enqueue("tx.job", n=1, connection=session)
                await txapp.enqueue("tx.job", n=2, scheduled_at=60, connection=session)

                async def finish(ok: bool) -> None:
                    await (session.commit() if ok else session.rollback())

                return job_id, finish

            await run_async(txapp, clean_db, commit, enqueue_in)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_sqlalchemy_async_connection(txapp: Soniq, clean_db: str, commit: bool) -> None:
    engine = create_async_engine(plain_url(clean_db, "asyncpg"))
    try:
        async with engine.connect() as conn:

            async def enqueue_in(heard: Heard) -> tuple[str, Any]:
                # No statement of the caller's first: the enqueue itself begins the transaction.
                job_id = await txapp.enqueue("tx.job", n=1, connection=conn)

                async def finish(ok: bool) -> None:
                    await (conn.commit() if ok else conn.rollback())

                return job_id, finish

            await run_async(txapp, clean_db, commit, enqueue_in)
    finally:
        await engine.dispose()


# -- sync drivers: app.enqueue_sync(..., connection=) from a thread -----------------------------


async def run_sync(
    url: str, commit: bool, open_tx: Callable[[], Any], enqueue: Callable[[Any], str]
) -> None:
    """``open_tx()`` (in a thread) returns (handle, finish); ``enqueue(handle)`` writes."""
    async with Heard(url) as heard:
        handle, finish = await asyncio.to_thread(open_tx)
        try:
            job_id = await asyncio.to_thread(enqueue, handle)
            assert not await heard.visible(job_id)
            assert await heard.quiet()
            await asyncio.to_thread(finish, commit)
        finally:
            await asyncio.to_thread(finish, None)
        if commit:
            assert await heard.visible(job_id)
            await wait_until(lambda: heard.payloads == ["default"], what="the notification")
        else:
            assert not await heard.visible(job_id)
            assert await heard.quiet()


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_psycopg_connection(txapp: Soniq, clean_db: str, commit: bool) -> None:
    def open_tx() -> Any:
        conn = psycopg.connect(clean_db)

        def finish(ok: bool | None) -> None:
            if ok is None:
                conn.close()
            else:
                conn.commit() if ok else conn.rollback()

        return conn, finish

    def enqueue(conn: Any) -> str:
        txapp.enqueue_many_sync("tx.job", [{"n": 2}], connection=conn)
        job_id: str = txapp.enqueue_sync("tx.job", n=1, connection=conn)
        return job_id

    await run_sync(clean_db, commit, open_tx, enqueue)


@pytest.mark.parametrize("kind", ["session", "connection"])
@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
async def test_sqlalchemy_sync(txapp: Soniq, clean_db: str, commit: bool, kind: str) -> None:
    engine = create_engine(plain_url(clean_db, "psycopg"))

    def open_tx() -> Any:
        handle: Any = Session(engine) if kind == "session" else engine.connect()

        def finish(ok: bool | None) -> None:
            if ok is None:
                handle.close()
            else:
                handle.commit() if ok else handle.rollback()

        return handle, finish

    def enqueue(handle: Any) -> str:
        job_id: str = txapp.enqueue_sync("tx.job", n=1, connection=handle)
        txapp.enqueue_sync("tx.job", n=2, scheduled_at=30, connection=handle)
        return job_id

    try:
        await run_sync(clean_db, commit, open_tx, enqueue)
    finally:
        engine.dispose()


# -- wrong use ------------------------------------------------------------------------------------


async def test_a_connection_of_the_wrong_kind_is_named(txapp: Soniq, clean_db: str) -> None:
    with pytest.raises(ConfigurationError, match=r"sqlite3\.Connection"):
        import sqlite3

        await txapp.enqueue("tx.job", n=1, connection=sqlite3.connect(":memory:"))
    conn = await asyncio.to_thread(psycopg.connect, clean_db)
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


async def test_refused_values_raise_the_usual_error(txapp: Soniq, clean_db: str) -> None:
    aconn = await psycopg.AsyncConnection.connect(clean_db)
    try:
        with pytest.raises(JobArgumentsError, match="cannot be stored"):
            await txapp.enqueue("tx.job", n="nul \x00", connection=aconn)
    finally:
        await aconn.close()


def test_placeholders_are_rewritten_once_per_statement() -> None:
    text_, order = pyformat("SELECT $2, $1, '5%', $2")
    assert text_ == "SELECT %s, %s, '5%%', %s" and order == (1, 0, 1)
    assert pyformat("SELECT $2, $1, '5%', $2") is pyformat("SELECT $2, $1, '5%', $2")
