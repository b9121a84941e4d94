"""``app.enqueue_sync``: enqueue from threads without an event loop (Django and Flask views,
WSGI servers, scripts).

The write is a blocking psycopg 3 statement on the calling thread: on Soniq's own
connections (a small thread-safe pool, separate from the asyncpg one, which is bound to its
event loop), or with the caller's ``connection=`` (see :mod:`soniq.connections`). Going through
an event loop in another thread instead costs two thread hand-offs per enqueue, measured at
0.35-0.8 of the async rate; psycopg's blocking call matches it (``bench/sync_enqueue.py``).

Enqueue middlewares are async; when the chain has any, it runs on an event loop private to
the calling thread, in a copy of the caller's context, so a producer span is a child of the
caller's current span, just as with ``await app.enqueue``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import connections as conns
from . import sql
from .errors import ConfigurationError, DatabaseUnavailable
from .insert_sql import insert_statement, unstorable
from .jobs import PendingJob
from .middleware import EnqueueContext, EnqueueNext

if TYPE_CHECKING:
    import psycopg

    from .middleware import MiddlewareChain
    from .store import Store


def refuse_in_event_loop(call: str) -> None:
    """Raise if the calling thread runs an event loop: a blocking enqueue would stall it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"app.{call}_sync() was called inside a running event loop, where it would block "
        f"every other task; use `await app.{call}(...)` there"
    )


class SyncEnqueuer:
    """One per app: its own psycopg connections and the per-thread loops for the chain."""

    def __init__(self, store: Store, chain: MiddlewareChain, *, max_size: int) -> None:
        self._store = store
        self._chain = chain
        self._pool = SyncPool(store, max_size=max_size)
        self._loops = threading.local()
        # One bound method for the app's life: the chain's compiled form is keyed on it.
        self._write_call = self._write_async
        #: The connection used when enqueue_sync gets none (the Django contrib sets it to
        #: Django's connection, so a view's enqueue joins its transaction.atomic()).
        self.default_connection: Any = None

    def enqueue(
        self,
        jobs: list[PendingJob],
        batch: bool,
        connection: Any,
        writer: EnqueueNext | None = None,
    ) -> None:
        """Write ``jobs`` through the enqueue middlewares; ``writer``: another innermost step
        than the database (``app.writer``, which soniq.testing sets)."""
        if connection is None and self.default_connection is not None:
            connection = self.default_connection()
        call = self._chain.enqueue_call(self._write_call if writer is None else writer)
        if call is self._write_call:  # no enqueue middleware: no loop, no context
            self.write(jobs, connection)
            return
        # The Task that runs the chain copies the caller's context: its current span, baggage.
        self._loop().run_until_complete(call(EnqueueContext(jobs, batch, connection)))

    async def _write_async(self, ctx: EnqueueContext) -> None:
        self.write(ctx.jobs, ctx.connection)  # blocking, on this thread's private loop

    def _loop(self) -> asyncio.AbstractEventLoop:
        holder: _LoopHolder | None = getattr(self._loops, "holder", None)
        if holder is None or holder.pid != os.getpid():
            holder = self._loops.holder = _LoopHolder()
        return holder.loop

    def write(self, jobs: Sequence[PendingJob], connection: Any) -> None:
        store = self._store
        if jobs and jobs[0].unique is not None:
            # Unique jobs take job control's own statements, which run on asyncpg only.
            raise ConfigurationError(
                f"enqueue_sync cannot write unique jobs ({jobs[0].job_name!r}) yet: use "
                f"`await app.enqueue(...)` for them"
            )
        query, args = insert_statement(jobs)
        query = store.qualify(query)
        if connection is None:
            self._pool.execute(jobs, query, args)
            return
        adapter = conns.adapter_for(connection)
        if adapter.is_async:
            raise conns.wrong_side(adapter, sync_call=True)
        if not store.schema_checked:
            store.judge_version(
                adapter.fetchval(connection, store.qualify(sql.CURRENT_VERSION), ())
            )
        try:
            adapter.execute(connection, query, args)
        except Exception as exc:
            if conns.refused_data(exc):
                raise unstorable(jobs, exc) from None
            raise  # the caller's connection: theirs to handle

    def close(self) -> None:
        self._pool.close()


class _LoopHolder:
    """A thread's private event loop, closed when the thread ends (its locals are dropped)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if self.pid == os.getpid() and not self.loop.is_closed():
            self.loop.close()


_INHERITED: list[Any] = []


class SyncPool:
    """Soniq's own psycopg connections for ``enqueue_sync``: autocommit, each statement
    prepared once per connection (not behind PgBouncer), at most ``max_size`` open; a thread
    waits ``connect_timeout`` for one. After a fork the child opens its own (the parent's
    sockets are left to the parent)."""

    def __init__(self, store: Store, *, max_size: int) -> None:
        self._store = store
        self._max_size = max_size
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle: list[tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]] = []
        self._slots = threading.BoundedSemaphore(max_size)

    def execute(self, jobs: Sequence[PendingJob], query: str, args: tuple[Any, ...]) -> None:
        import psycopg

        store = self._store
        text, params = conns.positional(query, args)
        if self._pid != os.getpid():
            self._after_fork()
        if not self._slots.acquire(timeout=store.connect_timeout):
            raise DatabaseUnavailable(
                f"enqueue_sync waited {store.connect_timeout:g}s for one of its "
                f"{self._max_size} connections (pool_max_size); all were busy"
            )
        kept: tuple[psycopg.Connection[Any], psycopg.Cursor[Any]] | None = None
        clean = False
        try:
            with self._lock:
                if self._idle:
                    kept = self._idle.pop()
            if kept is None or kept[0].closed:
                conn = self._connect()
                kept = (conn, conn.cursor())  # one cursor per connection, reused
            conn, cur = kept
            try:
                if not store.schema_checked:
                    row = cur.execute(store.qualify(sql.CURRENT_VERSION)).fetchone()
                    store.judge_version(row[0] if row else None)
                cur.execute(text, params)
                clean = True
            except psycopg.OperationalError as exc:
                conn.close()  # not put back: the next enqueue connects anew
                raise store.unavailable(exc) from exc
            except psycopg.DataError as exc:
                raise unstorable(jobs, exc) from None
        finally:
            if kept is not None and not kept[0].closed:
                # After a failure, hand on only a connection that is idle (autocommit leaves
                # it so after a statement's error; an interrupted one may not be).
                if clean or kept[0].info.transaction_status == 0:
                    with self._lock:
                        self._idle.append(kept)
                else:
                    kept[0].close()
            self._slots.release()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            import psycopg
        except ImportError:
            raise ConfigurationError(
                "enqueue_sync needs psycopg 3 for its own connections: "
                "pip install 'soniq[psycopg]' (or pass connection= with yours)"
            ) from None
        store = self._store
        url = store.resolve_sync()
        options: dict[str, Any] = {}
        if not store.pgbouncer:
            # PgBouncer in transaction mode refuses startup options, and would hand a session
            # setting to other clients: there the client's timeout is all there is.
            timeout_ms = max(1, round(store.command_timeout * 1000))
            options["options"] = f"-c statement_timeout={timeout_ms}"
        try:
            return psycopg.connect(
                url,
                autocommit=True,
                connect_timeout=max(1, round(store.connect_timeout)),
                # Prepared at first use, as the async path does; never behind PgBouncer, where
                # the next statement may run on another server connection.
                prepare_threshold=None if store.pgbouncer else 0,
                **options,
            )
        except psycopg.OperationalError as exc:
            raise store.unavailable(exc) from exc

    def _after_fork(self) -> None:
        # The parent's connections share their sockets with it: closing one here, or letting
        # it be collected, would end the parent's session too. They are kept, unused.
        _INHERITED.extend(self._idle)
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._idle = []
        self._slots = threading.BoundedSemaphore(self._max_size)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn, _ in idle:
                conn.close()
