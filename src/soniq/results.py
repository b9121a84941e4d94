"""Results you can await: ``get_result(job_id, wait=seconds)`` through LISTEN/NOTIFY.

A waiter marks its job ``awaited`` (sql_manage.AWAIT_JOB) after LISTENing on
sql.RESULTS_CHANNEL; the statement that ends an awaited job (the worker's finish, lease
recovery, a cancel or delete) notifies the channel with the job's id. A job nobody awaits is
never notified about, so the plain drain sends nothing more. One LISTEN connection per app
serves every waiter of the process; if it drops, each waiter reads its job again and a new
connection is made, so a notification lost with the connection is never waited for in vain.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from . import sql
from .db_errors import CONNECTION_ERRORS
from .errors import JobCancelled, JobFailed, JobNotFound
from .jobs import JobEnding
from .store import Store
from .store_admin import AdminStore

# How often a waiter that cannot LISTEN (PgBouncer, no listen_database_url) reads its job.
_POLL_S = 0.25


class ResultWaiter:
    def __init__(self, store: Store, admin: AdminStore) -> None:
        self._store = store
        self._admin = admin
        self._conn: asyncpg.Connection[Any] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        # job id -> the futures of the waiters on it (several may wait on one job)
        self._waiting: dict[str, set[asyncio.Future[None]]] = {}

    async def wait(self, job_id: str, timeout: float) -> JobEnding:
        """Until the job is done, dead-lettered or cancelled; TimeoutError past ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        marked = False
        # Behind PgBouncer without a direct URL no LISTEN is possible: the waiter polls.
        listens = self._store.listens
        while True:
            if listens:
                await self._listening()
            woken: asyncio.Future[None] = loop.create_future()
            self._waiting.setdefault(job_id, set()).add(woken)
            try:
                # Marked once per connection: a finish that commits before the mark is what
                # this reads; one after it sees the mark and notifies this connection.
                if marked:
                    outcome = await self._admin.read_outcome(job_id)
                else:
                    outcome = await self._admin.await_job(job_id)
                    marked = True
                if outcome is None:
                    raise JobNotFound(f"No job with id {job_id} (deleted, or never enqueued)")
                if outcome.final:
                    return outcome
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(
                        f"Job {job_id} did not finish within {timeout:g}s; it is "
                        f"{outcome.status} (attempt {outcome.attempts})"
                    )
                try:
                    await asyncio.wait_for(woken, left if listens else min(left, _POLL_S))
                except asyncio.TimeoutError:
                    if not listens and loop.time() < deadline:
                        continue  # read it again
                    raise TimeoutError(
                        f"Job {job_id} did not finish within {timeout:g}s; it is "
                        f"{outcome.status} (attempt {outcome.attempts})"
                    ) from None
                if listens and self._conn is None:
                    marked = False  # the connection dropped: mark again on the new one
            finally:
                waiters = self._waiting.get(job_id)
                if waiters is not None:
                    waiters.discard(woken)
                    if not waiters:
                        del self._waiting[job_id]

    async def _listening(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # an app used again under a new event loop
            if self._conn is not None:
                self._conn.terminate()
            self._conn, self._loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return
            conn = await self._store.connect_listener()
            try:
                conn.add_termination_listener(self._lost)
                await conn.add_listener(sql.RESULTS_CHANNEL, self._notified)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for woken in self._waiting.get(str(payload), ()):
            if not woken.done():
                woken.set_result(None)

    def _lost(self, _conn: Any) -> None:
        self._conn = None
        for waiters in self._waiting.values():
            for woken in waiters:
                if not woken.done():
                    woken.set_result(None)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        if self._loop is not asyncio.get_running_loop():
            conn.terminate()
            return
        with contextlib.suppress(*CONNECTION_ERRORS):
            await conn.close(timeout=self._store.connect_timeout)


def unwrap(job_id: str, outcome: JobEnding) -> Any:
    """The result of a finished job, or the error that says why there is none."""
    if outcome.status == "dead_letter":
        raise JobFailed(job_id, outcome.last_error, outcome.attempts, outcome.errors)
    if outcome.status == "cancelled":
        raise JobCancelled(job_id)
    return outcome.result
