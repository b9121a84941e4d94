"""``app.enqueue_sync``: enqueue from threads without an event loop (Django and Flask views,
WSGI servers, scripts).

The app's sync calls (:class:`EnqueuesSync`, a mixin of :class:`soniq.Soniq`) and the way they
run the enqueue chain. The write is a blocking psycopg 3 statement on the calling thread
(:mod:`soniq.sync_store`: Soniq's own connections, or the caller's ``connection=``), unique jobs
included. Going through an event loop in another thread instead costs two thread hand-offs per
enqueue, measured at 0.35-0.8 of the async rate; psycopg's blocking call matches it
(``bench/sync_enqueue.py``).

Enqueue middlewares are async; when the chain has any, it runs on an event loop private to
the calling thread, in a copy of the caller's context, so a producer span is a child of the
caller's current span, just as with ``await app.enqueue``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .jobs import PendingJob
from .middleware import EnqueueContext, EnqueueNext
from .sync_store import SyncStore
from .unique import EnqueueResult

if TYPE_CHECKING:
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


class EnqueuesSync:
    """The sync enqueue calls of :class:`soniq.Soniq`: the async calls' checks (the app's
    ``_one`` and ``_pending_many`` build the pending jobs for both sides), middlewares and
    results, blocking until the rows are written."""

    _sync: SyncEnqueuer

    if TYPE_CHECKING:

        def _one(
            self,
            job: str | Callable[..., Any],
            kwargs: dict[str, Any],
            queue: str | None,
            priority: int | None,
            scheduled_at: datetime | timedelta | float | None,
            dedup_key: str | None,
        ) -> PendingJob: ...

        def _pending_many(
            self,
            job: str | Callable[..., Any],
            kwargs_list: Iterable[Mapping[str, Any]],
            queue: str | None,
            priority: int | None,
            scheduled_at: datetime | timedelta | float | None,
        ) -> list[PendingJob]: ...

        def _test_writer(self) -> EnqueueNext | None: ...

    def enqueue_sync(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> str:
        """:meth:`~soniq.Soniq.enqueue` for code without an event loop (a Django or Flask view,
        a script): the same checks, middlewares and result (a unique job that meets an
        existing one returns the existing id), blocking until the row is written. Safe from
        any number of threads. ``connection=``: a psycopg, psycopg2, SQLAlchemy ``Session`` or
        Django connection, whose transaction the row joins (:mod:`soniq.connections`)."""
        refuse_in_event_loop("enqueue")
        pending = self._one(job, kwargs, queue, priority, scheduled_at, dedup_key)
        self._sync.enqueue([pending], False, connection, self._test_writer())
        return pending.id

    def enqueue_result_sync(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> EnqueueResult:
        """:meth:`~soniq.Soniq.enqueue_result` for code without an event loop: the id, and
        whether the job was deduplicated or replaced the existing job's arguments."""
        refuse_in_event_loop("enqueue_result")
        pending = self._one(job, kwargs, queue, priority, scheduled_at, dedup_key)
        self._sync.enqueue([pending], False, connection, self._test_writer())
        return EnqueueResult(pending.id, pending.deduplicated, pending.replaced)

    def enqueue_many_sync(
        self,
        job: str | Callable[..., Any],
        kwargs_list: Iterable[Mapping[str, Any]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        scheduled_at: datetime | timedelta | float | None = None,
        connection: Any = None,
    ) -> list[str]:
        """:meth:`~soniq.Soniq.enqueue_many` for code without an event loop (see
        :meth:`enqueue_sync`)."""
        refuse_in_event_loop("enqueue_many")
        jobs = self._pending_many(job, kwargs_list, queue, priority, scheduled_at)
        if jobs:
            self._sync.enqueue(jobs, True, connection, self._test_writer())
        return [j.id for j in jobs]

    def set_sync_connection(self, factory: Callable[[], Any] | None) -> None:
        """Make ``enqueue_sync`` without ``connection=`` write with ``factory()``'s connection
        (called per enqueue, on the calling thread), so enqueues join the framework's current
        transaction: the Django contrib passes Django's connection; with Flask-SQLAlchemy,
        ``lambda: db.session``. None: Soniq's own connections again."""
        self._sync.default_connection = factory

    def close_sync(self) -> None:
        """Close the connections ``enqueue_sync`` opened (``close()`` does too)."""
        self._sync.close()


class SyncEnqueuer:
    """One per app: its statements (:class:`SyncStore`) and the per-thread loops for the
    chain."""

    def __init__(self, store: Store, chain: MiddlewareChain, *, max_size: int) -> None:
        self._chain = chain
        self._store = SyncStore(store, max_size=max_size)
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
            self._store.insert(jobs, connection)
            return
        # The Task that runs the chain copies the caller's context: its current span, baggage.
        self._loop().run_until_complete(call(EnqueueContext(jobs, batch, connection)))

    async def _write_async(self, ctx: EnqueueContext) -> None:
        self._store.insert(ctx.jobs, ctx.connection)  # blocking, on this thread's private loop

    def _loop(self) -> asyncio.AbstractEventLoop:
        holder: _LoopHolder | None = getattr(self._loops, "holder", None)
        if holder is None or holder.pid != os.getpid():
            holder = self._loops.holder = _LoopHolder()
        return holder.loop

    def close(self) -> None:
        self._store.close()


class _LoopHolder:
    """A thread's private event loop, closed when the thread ends (its locals are dropped)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()

    def __del__(self) -> None:
        if self.pid == os.getpid() and not self.loop.is_closed():
            self.loop.close()
