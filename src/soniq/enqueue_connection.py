"""The one connection Soniq keeps for enqueues (the store's fast path for a single producer).

A producer enqueueing one job after another always finds it free, and a pool's acquire and
release cost about as much Python as the statement itself. Its ``command_timeout`` is enforced
by the server (``statement_timeout``, which cancels the statement for good), not by a client
timer per statement; one watchdog timer per ``command_timeout`` only covers a silent network.
An enqueue that finds it busy, or an app behind PgBouncer, uses the pool instead
(:meth:`soniq.store.Store._execute` decides).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import asyncpg

from .db_errors import CONNECTION_ERRORS
from .errors import DatabaseUnavailable

if TYPE_CHECKING:
    from .store import Store


class EnqueueConnection:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._conn: asyncpg.Connection[Any] | None = None
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        self._statements: dict[str, asyncpg.prepared_stmt.PreparedStatement[Any]] = {}

    @property
    def busy(self) -> bool:
        """An enqueue is running on it; another must take a pool connection."""
        return self._busy

    async def execute(self, query: str, args: tuple[Any, ...]) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # an app used again under a new event loop
            self._conn, self._watchdog, self._loop = None, None, loop
        self._busy = True
        self._since = loop.time()
        try:
            conn = self._conn
            if conn is None or conn.is_closed():
                self._statements.clear()
                conn = self._conn = await self._connect()
            if self._watchdog is None:
                self._watchdog = loop.call_later(self._hang_after, self._check)
            statement = self._statements.get(query)
            if statement is None:
                statement = self._statements[query] = await conn.prepare(query)
            await statement.fetch(*args)  # a prepared statement skips execute()'s cache lookup
        except asyncpg.QueryCanceledError as exc:
            raise DatabaseUnavailable(
                f"PostgreSQL at {self._store.display_url} cancelled an enqueue: it did not "
                f"finish within {self._store.command_timeout:g}s (command_timeout), or an "
                f"administrator cancelled it; nothing was written"
            ) from exc
        except CONNECTION_ERRORS:
            self._drop()
            raise
        finally:
            self._busy = False

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(*CONNECTION_ERRORS):
                await conn.close(timeout=self._store.connect_timeout)

    @property
    def _hang_after(self) -> float:
        # Past the server's own statement_timeout, with room for its answer to arrive.
        return self._store.command_timeout + max(1.0, self._store.connect_timeout)

    async def _connect(self) -> asyncpg.Connection[Any]:
        store = self._store
        conn: asyncpg.Connection[Any] = await store.connect(client_timeout=False)
        try:
            await conn.execute(
                "SELECT set_config('statement_timeout', $1, false)",
                str(max(1, round(store.command_timeout * 1000))),
            )
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _check(self) -> None:
        """Watchdog: an enqueue still waiting well past command_timeout has a silent network
        under it (the server would have cancelled the statement): cut the connection, so the
        waiting enqueue fails instead of hanging."""
        self._watchdog = None
        if not self._busy or self._conn is None:
            return
        loop = asyncio.get_running_loop()
        left = self._since + self._hang_after - loop.time()
        if left > 0:
            self._watchdog = loop.call_later(left, self._check)
        else:
            self._conn.terminate()

    def _drop(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None
