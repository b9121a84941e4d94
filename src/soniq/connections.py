"""The caller's connection for ``connection=``, whatever its driver: one small adapter class
per driver, found by the connection's type.

An enqueue with ``connection=`` writes its row with the caller's connection, so it is part of
the caller's transaction: rolled back with it, and heard of by the workers only at commit (the
INSERT statements ``pg_notify``, which PostgreSQL delivers at commit). Accepted:

- asyncpg: a ``Connection`` or a pool's connection (``await app.enqueue``);
- psycopg 3: ``AsyncConnection`` (``await app.enqueue``), ``Connection`` (``app.enqueue_sync``);
- psycopg2: ``connection`` (``app.enqueue_sync``);
- SQLAlchemy 2: ``AsyncSession``/``AsyncConnection`` (``await app.enqueue``) and
  ``Session``/``Connection`` (``app.enqueue_sync``) on any of those drivers;
- Django: ``django.db.connection`` or ``connections[alias]`` (``app.enqueue_sync``).

Nothing here imports a driver: an adapter is chosen by ``type(conn).__module__``, so a driver
the application does not use is never loaded. The statements in :mod:`soniq.sql` use asyncpg's
``$n`` placeholders; :func:`pyformat` derives the ``%s`` form the DB-API drivers take, once
per statement.

The adapters are the stores' driver layer: they run only what a store hands them
(:mod:`soniq.store`, :mod:`soniq.control_store`, :mod:`soniq.sync_store`), never a statement
of their own choosing, except the savepoint that brackets a unique enqueue (:meth:`savepoint`).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from .errors import ConfigurationError

_PLACEHOLDER = re.compile(r"\$(\d+)")


@functools.lru_cache(maxsize=128)
def pyformat(statement: str) -> tuple[str, tuple[int, ...]]:
    """``statement`` with each ``$n`` written ``%s`` (and ``%`` as ``%%``), and for each
    ``%s`` in order the index of the argument it takes (a ``$n`` may appear twice)."""
    order: list[int] = []

    def one(match: re.Match[str]) -> str:
        order.append(int(match.group(1)) - 1)
        return "%s"

    return _PLACEHOLDER.sub(one, statement.replace("%", "%%")), tuple(order)


def positional(statement: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """The ``%s`` form of ``statement`` and the arguments in the order it takes them."""
    text, order = pyformat(statement)
    return text, tuple(args[i] for i in order)


Rows = Sequence[Sequence[Any]]

# A unique enqueue's own savepoint in the caller's transaction (asyncpg's conn.transaction()
# does the same): DuplicateJob, or a refused value, undoes the enqueue and leaves the caller's
# transaction usable.
_SAVEPOINT = (
    "SAVEPOINT soniq_unique",
    "RELEASE SAVEPOINT soniq_unique",
    ("ROLLBACK TO SAVEPOINT soniq_unique", "RELEASE SAVEPOINT soniq_unique"),
)
# A connection in autocommit with no transaction open would commit each statement by itself: a
# unique enqueue (several statements) opens a transaction of its own there.
_OWN_TRANSACTION = ("BEGIN", "COMMIT", ("ROLLBACK",))


def _brackets(conn: Any) -> tuple[str, str, tuple[str, ...]]:
    """The statements around a unique enqueue on a psycopg (3 or 2) connection. A connection
    not in autocommit opens its transaction at the first statement, as a plain enqueue's
    INSERT would: the caller commits it."""
    if conn.autocommit and conn.info.transaction_status == 0:  # idle: no transaction open
        return _OWN_TRANSACTION
    return _SAVEPOINT


class Adapter:
    """Runs a statement with a caller's connection. ``is_async``: whether its methods are
    awaited (``await app.enqueue``) or called (``app.enqueue_sync``).

    ``fetch`` returns the rows (read by position; none for a statement without any);
    ``savepoint(conn)`` is a context manager (async for an async adapter) around statements
    that must stand or fall together inside the caller's transaction."""

    is_async = False
    driver = "?"

    def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    def savepoint(self, conn: Any) -> Any:
        raise NotImplementedError


class AsyncpgAdapter(Adapter):
    is_async = True
    driver = "an asyncpg connection"

    async def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> None:
        await conn.execute(query, *args)

    async def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        return await conn.fetchval(query, *args)

    async def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
        rows: Rows = await conn.fetch(query, *args)
        return rows

    def savepoint(self, conn: Any) -> Any:
        return conn.transaction()  # a savepoint inside a transaction, else one of its own


class DbapiAdapter(Adapter):
    """psycopg 3 and psycopg2 connections, and Django's (whose cursor hands the statement to
    one of them): a cursor, ``%s`` placeholders."""

    driver = "a DB-API connection (psycopg, psycopg2 or Django)"

    def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> None:
        with conn.cursor() as cur:
            cur.execute(*positional(query, args))

    def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        with conn.cursor() as cur:
            cur.execute(*positional(query, args))
            row = cur.fetchone()
            return row[0] if row else None

    def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
        with conn.cursor() as cur:
            cur.execute(*positional(query, args))
            return cur.fetchall() if cur.description is not None else []

    @contextlib.contextmanager
    def savepoint(self, conn: Any) -> Iterator[None]:
        start, release, undo = _brackets(conn)
        self.execute(conn, start, ())
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the first error tells
                for statement in undo:
                    self.execute(conn, statement, ())
            raise
        self.execute(conn, release, ())


class DjangoAdapter(DbapiAdapter):
    """Django's connection: statements through its cursor, the savepoint through
    ``transaction.atomic`` (a savepoint inside an atomic block, a transaction of its own in
    autocommit), so Django's idea of the connection's state stays true."""

    def savepoint(self, conn: Any) -> Any:
        from django.db import transaction

        return transaction.atomic(using=conn.alias)


class PsycopgAsyncAdapter(Adapter):
    is_async = True
    driver = "a psycopg AsyncConnection"

    async def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> None:
        async with conn.cursor() as cur:
            await cur.execute(*positional(query, args))

    async def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        async with conn.cursor() as cur:
            await cur.execute(*positional(query, args))
            row = await cur.fetchone()
            return row[0] if row else None

    async def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
        async with conn.cursor() as cur:
            await cur.execute(*positional(query, args))
            return await cur.fetchall() if cur.description is not None else []

    @contextlib.asynccontextmanager
    async def savepoint(self, conn: Any) -> AsyncIterator[None]:
        start, release, undo = _brackets(conn)
        await self.execute(conn, start, ())
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # a broken connection: the first error tells
                for statement in undo:
                    await self.execute(conn, statement, ())
            raise
        await self.execute(conn, release, ())


def _driver_sql(conn: Any, query: str, args: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    # exec_driver_sql hands the text to the DB-API driver as is: asyncpg's SQLAlchemy dialect
    # takes $n (numeric_dollar), the psycopg ones %s.
    if conn.dialect.paramstyle == "numeric_dollar":
        return query, args
    return positional(query, args)


class SQLAlchemyAdapter(Adapter):
    """A ``Session`` (its connection for the current transaction, which it begins if none has
    begun) or a ``Connection``; the statement runs through ``exec_driver_sql``, so it is in the
    transaction SQLAlchemy has begun on the driver."""

    driver = "a SQLAlchemy Session or Connection"

    def _conn(self, conn: Any) -> Any:
        return conn.connection() if hasattr(conn, "get_bind") else conn

    def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> None:
        c = self._conn(conn)
        c.exec_driver_sql(*_driver_sql(c, query, args))

    def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        c = self._conn(conn)
        return c.exec_driver_sql(*_driver_sql(c, query, args)).scalar()

    def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
        c = self._conn(conn)
        result = c.exec_driver_sql(*_driver_sql(c, query, args))
        return result.all() if result.returns_rows else []

    def savepoint(self, conn: Any) -> Any:
        # SQLAlchemy's own SAVEPOINT (a Session's or a Connection's), in the transaction it
        # has begun or begins now; the caller still commits that one.
        return conn.begin_nested()


class SQLAlchemyAsyncAdapter(Adapter):
    is_async = True
    driver = "a SQLAlchemy AsyncSession or AsyncConnection"

    async def _conn(self, conn: Any) -> Any:
        return (await conn.connection()) if hasattr(conn, "get_bind") else conn

    async def execute(self, conn: Any, query: str, args: tuple[Any, ...]) -> None:
        c = await self._conn(conn)
        await c.exec_driver_sql(*_driver_sql(c, query, args))

    async def fetchval(self, conn: Any, query: str, args: tuple[Any, ...]) -> Any:
        c = await self._conn(conn)
        return (await c.exec_driver_sql(*_driver_sql(c, query, args))).scalar()

    async def fetch(self, conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
        c = await self._conn(conn)
        result = await c.exec_driver_sql(*_driver_sql(c, query, args))
        return result.all() if result.returns_rows else []

    def savepoint(self, conn: Any) -> Any:
        return conn.begin_nested()


ASYNCPG = AsyncpgAdapter()
DBAPI = DbapiAdapter()
DJANGO = DjangoAdapter()
PSYCOPG_ASYNC = PsycopgAsyncAdapter()
SQLALCHEMY = SQLAlchemyAdapter()
SQLALCHEMY_ASYNC = SQLAlchemyAsyncAdapter()

_ASYNC_SQLALCHEMY_TYPES = {"AsyncSession", "AsyncConnection", "async_scoped_session"}
_SYNC_SQLALCHEMY_TYPES = {"Session", "Connection", "scoped_session"}
_by_type: dict[type, Adapter] = {}


def adapter_for(conn: object) -> Adapter:
    """The adapter for ``conn``'s driver; a clear error for anything else."""
    kind = type(conn)
    adapter = _by_type.get(kind)
    if adapter is None:
        adapter = _by_type[kind] = _find(kind)
    return adapter


def _find(kind: type) -> Adapter:
    module = kind.__module__.split(".", 1)[0]
    names = {k.__name__ for k in kind.__mro__}
    if module == "asyncpg":
        return ASYNCPG
    if module == "psycopg":
        return PSYCOPG_ASYNC if "AsyncConnection" in names else DBAPI
    if module == "psycopg2":
        return DBAPI
    if module == "django":
        return DJANGO
    if module == "sqlalchemy":
        if names & _ASYNC_SQLALCHEMY_TYPES:
            return SQLALCHEMY_ASYNC
        if names & _SYNC_SQLALCHEMY_TYPES:
            return SQLALCHEMY
    raise ConfigurationError(
        f"connection= got a {kind.__module__}.{kind.__qualname__}; Soniq takes an asyncpg "
        f"connection, a psycopg (3) Connection or AsyncConnection, a psycopg2 connection, a "
        f"SQLAlchemy Session, AsyncSession, Connection or AsyncConnection, or Django's "
        f"connection (see docs/web-apps.md)"
    )


def wrong_side(adapter: Adapter, sync_call: bool) -> ConfigurationError:
    """The error for an async connection given to a sync call, or the other way round."""
    if sync_call:
        return ConfigurationError(
            f"enqueue_sync(connection=...) got {adapter.driver}, which is async: use "
            f"`await app.enqueue(..., connection=conn)` with it"
        )
    return ConfigurationError(
        f"enqueue(connection=...) got {adapter.driver}, which is sync: use "
        f"`app.enqueue_sync(..., connection=conn)` with it"
    )


def refused_data(exc: BaseException) -> bool:
    """Whether a driver's error says PostgreSQL (or the driver) refused a value, not a
    connection problem: DataError in any of the drivers' and frameworks' hierarchies, or the
    SQLSTATE of one (class 22, 54000). The SQLSTATE and the wrapped errors are looked at too
    because SQLAlchemy's asyncpg dialect maps only some asyncpg errors to its DataError and
    raises the rest (an unsupported Unicode escape: a NUL in a string) as a bare DBAPIError."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if any(k.__name__ in _DATA_ERRORS for k in type(err).__mro__):
            return True
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(code, str) and (code.startswith("22") or code == "54000"):
            return True
        orig = getattr(err, "orig", None)  # SQLAlchemy's wrapper: the driver's error
        todo += [orig if isinstance(orig, BaseException) else None, err.__cause__]
    return False


_DATA_ERRORS = {"DataError", "ProgramLimitExceeded", "ProgramLimitExceededError"}
