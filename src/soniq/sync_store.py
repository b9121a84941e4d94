"""The statements of ``enqueue_sync``, run blocking on the calling thread: on Soniq's own psycopg
3 connections (:class:`SyncPool`, separate from the asyncpg pool, which is bound to its event
loop) or on the caller's sync ``connection=`` (:mod:`soniq.connections`).

The statements are the async side's, in their ``%s`` form (:func:`soniq.connections.positional`,
derived once per statement): :mod:`soniq.insert_sql` picks the plain INSERT, and unique jobs are
settled by :mod:`soniq.unique_settle`, the same rules the control store drives on asyncpg.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import connections as conns
from . import sql
from .errors import ConfigurationError, DatabaseUnavailable
from .insert_sql import insert_statement, unstorable
from .unique_settle import Rows, drive_sync, fold_batch, settle, take_ids

if TYPE_CHECKING:
    import psycopg

    from .jobs import PendingJob
    from .store import Store


class SyncStore:
    """One per app: writes pending jobs, plain or unique, as ``Store.insert`` and
    ``ControlStore.insert_unique`` do on the async side."""

    def __init__(self, store: Store, *, max_size: int) -> None:
        self._store = store
        self._pool = SyncPool(store, max_size=max_size)

    def insert(self, jobs: Sequence[PendingJob], connection: Any) -> None:
        if jobs[0].unique is not None:
            self._insert_unique(jobs, connection)
            return
        store = self._store
        query, args = insert_statement(jobs)
        query = store.qualify(query)
        if connection is None:
            text, params = conns.positional(query, args)
            self._pool.run(jobs, lambda cur: cur.execute(text, params))
            return
        adapter = self._adapter(connection)
        try:
            adapter.execute(connection, query, args)
        except Exception as exc:
            if conns.refused_data(exc):
                raise unstorable(jobs, exc) from None
            raise  # the caller's connection: theirs to handle

    def _insert_unique(self, jobs: Sequence[PendingJob], connection: Any) -> None:
        """Duplicates within the batch first, then the database decides, in a transaction of
        the pool connection's own or a savepoint in the caller's, so ``raise`` writes nothing."""
        qualify = self._store.qualify
        firsts, followers = fold_batch(jobs)
        if connection is None:

            def work(cur: psycopg.Cursor[Any]) -> None:
                def run(query: str, args: tuple[Any, ...]) -> Rows:
                    cur.execute(*conns.positional(qualify(query), args))
                    return cur.fetchall() if cur.description is not None else []

                with cur.connection.transaction():  # autocommit: BEGIN ... COMMIT
                    drive_sync(settle(firsts), run)

            self._pool.run(jobs, work)
        else:
            adapter = self._adapter(connection)

            def run_with(query: str, args: tuple[Any, ...]) -> Rows:
                rows: Rows = adapter.fetch(connection, qualify(query), args)
                return rows

            try:
                with adapter.savepoint(connection):
                    drive_sync(settle(firsts), run_with)
            except Exception as exc:
                if conns.refused_data(exc):
                    raise unstorable(jobs, exc) from None
                raise  # the caller's connection: theirs to handle
        take_ids(followers)

    def _adapter(self, connection: Any) -> conns.Adapter:
        """The caller's connection's adapter, once the schema is known to be right."""
        store = self._store
        adapter = conns.adapter_for(connection)
        if adapter.is_async:
            raise conns.wrong_side(adapter, sync_call=True)
        if not store.schema_checked:
            store.judge_version(
                adapter.fetchval(connection, store.qualify(sql.CURRENT_VERSION), ())
            )
        return adapter

    def close(self) -> None:
        self._pool.close()


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

    def run(self, jobs: Sequence[PendingJob], work: Callable[[psycopg.Cursor[Any]], Any]) -> None:
        """``work(cursor)`` on one of the connections, which writes ``jobs`` (named in the
        error for a value PostgreSQL refuses)."""
        import psycopg

        store = self._store
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
                work(cur)
                clean = True
            except psycopg.OperationalError as exc:
                conn.close()  # not put back: the next enqueue connects anew
                raise store.unavailable(exc) from exc
            except psycopg.DataError as exc:
                raise unstorable(jobs, exc) from None
        finally:
            if kept is not None and not kept[0].closed:
                # After a failure, hand on only a connection that is idle (autocommit leaves
                # it so after a statement's error, and a unique write's transaction block
                # rolls back on any; an interrupted one may not be).
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
