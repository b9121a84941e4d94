"""The worker's statements: its round trip (finish and claim), and the liveness statements
(register, beat, lease recovery, LISTEN), sent on the :class:`soniq.store.Store`'s pool and
connections.

One :class:`WorkerStore` per worker holds what every statement of that worker binds (its id,
queues and the job names it knows) and returns typed values from :mod:`soniq.jobs`. The
heartbeat and LISTEN each have a dedicated connection (:class:`LivenessConnection`,
:class:`ListenConnection`), outside the pool, so they never queue behind jobs that hold pool
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import sql, sql_control, sql_liveness
from .jobs import Claim, ClaimedJob, FinishedAttempt, JobStatus, LostJob, StartedAttempt

if TYPE_CHECKING:
    import asyncpg

    from .store import Store
    from .worker_control import ControlView

_DUE_COLUMN = len(ClaimedJob.FIELDS)  # with_due: after the claimed job's columns
_DONE = JobStatus.DONE


class WorkerStore:
    """The statements one worker sends. Set ``known_names`` (the registry's job names) before
    the first claim: a worker claims only jobs it knows."""

    def __init__(
        self, store: Store, worker_id: str, queues: list[str] | None, concurrency: int
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self.queues = queues
        self.concurrency = concurrency
        self.known_names: list[str] = []
        queue_filter = (
            sql.QUEUE_FILTER_ALL
            if queues is None
            else sql.QUEUE_FILTER_ONE
            if len(queues) == 1
            else sql.QUEUE_FILTER_MANY
        )
        self._claim_sql = sql.finish_and_claim(queue_filter)
        self._claim_due_sql = sql.finish_and_claim(queue_filter, with_due=True)
        # Job control (soniq.worker_control): once a queue is paused or limited, the claim
        # leaves it out; until then (None or an empty view) the statements above, unchanged.
        self.control_view: ControlView | None = None

    @property
    def command_timeout(self) -> float:
        return self._store.command_timeout

    async def finish_and_claim(
        self,
        finished: Sequence[FinishedAttempt],
        starts: Sequence[StartedAttempt] = (),
        *,
        free: int = 0,
        want: int = 0,
        with_due: bool = False,
    ) -> Claim:
        """Record ``finished`` and ``starts``; claim up to ``want`` jobs, the first ``free`` of
        them counted as started. ``with_due``: a claim that comes back short also says when
        the next delayed job comes due (see :func:`soniq.sql.finish_and_claim`)."""
        done: list[FinishedAttempt] = []
        other: list[FinishedAttempt] = []
        for f in finished:
            plain = f.status is _DONE and f.result is None and f.trace_context is None
            (done if plain else other).append(f)
        # Starts are records with no status (the job only started) and nothing else to write.
        blank: list[None] = [None] * len(starts)
        pool = await self._store.claim_pool()
        view = self.control_view
        if view is not None and view.active:
            claim, queues = view.claim_sql(with_due), view.claim_queues()
        else:
            claim, queues = self._claim_due_sql if with_due else self._claim_sql, self.queues
        rows = await pool.fetch(
            claim,
            self.worker_id,
            [f.id for f in other] + [s.id for s in starts],
            [f.status for f in other] + blank,
            [f.result for f in other] + blank,
            [f.error for f in other] + blank,
            [f.traceback for f in other] + blank,
            [f.delay_s for f in other] + [0.0] * len(starts),
            [f.attempt - f.refund for f in other] + [s.attempt for s in starts],
            max(0, want),
            self.known_names,
            queues,
            [f.trace_context for f in other] + blank,
            max(0, free),
            ",".join([f.id for f in done]),
            ",".join([str(f.attempt) for f in done]),
            timeout=self._store.command_timeout,
            record_class=ClaimedJob,
        )
        if not with_due:
            return Claim(rows, None)
        # Every row carries the due time last; with nothing claimed, one row of NULLs carries
        # only that.
        due: float | None = rows[0][_DUE_COLUMN]
        return Claim([] if rows[0][0] is None else rows, due)

    async def next_due(self) -> float | None:
        """Seconds until the next delayed job or retry this worker could run comes due."""
        pool = await self._store.claim_pool()
        due: float | None = await pool.fetchval(
            sql.NEXT_DUE, self.queues, self.known_names, timeout=self._store.command_timeout
        )
        return due

    async def register_worker(self) -> None:
        """Add this worker's row (or beat it, if it is there)."""
        await self._register(await self._store.pool())

    async def _register(self, target: asyncpg.Pool[Any] | asyncpg.Connection[Any]) -> None:
        await target.execute(
            sql_liveness.REGISTER_WORKER,
            self.worker_id,
            socket.gethostname(),
            os.getpid(),
            self.queues,
            self.concurrency,
            timeout=self._store.command_timeout,
        )

    async def release_untracked(self, keep: Sequence[str]) -> None:
        """Put back the jobs this worker holds other than ``keep``, uncounted."""
        pool = await self._store.pool()
        await pool.execute(
            sql_liveness.RELEASE_UNTRACKED,
            self.worker_id,
            list(keep),
            timeout=self._store.command_timeout,
        )

    async def refund_held(self, held: Sequence[str]) -> None:
        """Refund in advance the running attempts of jobs a thread still runs at exit."""
        pool = await self._store.pool()
        await pool.execute(
            sql_liveness.REFUND_HELD,
            self.worker_id,
            list(held),
            timeout=self._store.command_timeout,
        )

    async def deregister_worker(self) -> None:
        pool = await self._store.pool()
        await pool.execute(
            sql_liveness.DEREGISTER_WORKER, self.worker_id, timeout=self._store.command_timeout
        )

    @property
    def listens(self) -> bool:
        """Whether LISTEN is possible (not behind PgBouncer without a direct URL)."""
        return self._store.listens

    async def listen(
        self,
        on_notify: Callable[[object], None],
        on_schedules: Callable[[], None] | None = None,
        on_control: Callable[[object], None] | None = None,
    ) -> ListenConnection:
        """A dedicated connection listening for new jobs; ``on_notify`` gets each payload.
        ``on_schedules`` is called when a schedule changes (soniq.schedules); ``on_control``
        gets each payload of the job-control channel (cancel requests, queue controls)."""
        conn = await self._store.connect_listener()
        try:
            listening = ListenConnection(conn, self._store.connect_timeout)
            await conn.add_listener(
                sql.NOTIFY_CHANNEL, lambda _conn, _pid, _channel, payload: on_notify(payload)
            )
            if on_schedules is not None:
                await conn.add_listener(sql.SCHEDULES_CHANNEL, lambda *_: on_schedules())
            if on_control is not None:
                await conn.add_listener(
                    sql.CONTROL_CHANNEL,
                    lambda _conn, _pid, _channel, payload: on_control(payload),
                )
        except BaseException:
            conn.terminate()
            raise
        return listening

    async def liveness_connection(self) -> LivenessConnection:
        """A dedicated connection for the heartbeat and what it does besides."""
        return LivenessConnection(self, await self._store.connect())


class ListenConnection:
    """The LISTEN connection. ``lost`` is set when the server closes it."""

    def __init__(self, conn: asyncpg.Connection[Any], ping_timeout: float) -> None:
        self._conn = conn
        self._ping_timeout = ping_timeout
        self.lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self.lost.set())

    async def ping(self) -> None:
        """An idle socket may die silently; a statement notices."""
        await self._conn.execute("SELECT 1", timeout=self._ping_timeout)

    async def close(self) -> None:
        if not self._conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), 2)


class LivenessConnection:
    """The heartbeat's own connection, with the statements the heartbeat sends."""

    def __init__(self, store: WorkerStore, conn: asyncpg.Connection[Any]) -> None:
        self._store = store
        self._conn = conn

    def is_closed(self) -> bool:
        return self._conn.is_closed()

    def terminate(self) -> None:
        self._conn.terminate()

    async def beat(self, timeout: float) -> bool:
        """Beat this worker's row; False when the row is gone (removed as dead)."""
        return (
            await self._conn.fetchval(
                sql_liveness.HEARTBEAT, self._store.worker_id, timeout=timeout
            )
            is not None
        )

    async def register_worker(self) -> None:
        await self._store._register(self._conn)

    async def recover_lost(self, lease_seconds: float) -> list[LostJob]:
        """Put back the jobs of workers silent for ``lease_seconds`` (see
        sql_liveness.RECOVER_LOST_JOBS); the jobs recovered."""
        rows = await self._conn.fetch(
            sql_liveness.RECOVER_LOST_JOBS, lease_seconds, timeout=self._store.command_timeout
        )
        return [LostJob(str(r[0]), r[1], JobStatus(r[2])) for r in rows]

    async def delete_dead_workers(self, silent_for: float) -> None:
        await self._conn.execute(
            sql_liveness.DELETE_DEAD_WORKERS, silent_for, timeout=self._store.command_timeout
        )

    async def unknown_ready_names(self) -> list[str]:
        """Job names at the head of this worker's queues that it does not know."""
        rows = await self._conn.fetch(
            sql_liveness.UNKNOWN_READY_NAMES,
            self._store.queues,
            self._store.known_names,
            timeout=self._store.command_timeout,
        )
        return [r[0] for r in rows]

    async def cancel_requested(self) -> list[str]:
        """This worker's running jobs that app.cancel_job asked to stop (for a worker whose
        LISTEN missed the NOTIFY)."""
        rows = await self._conn.fetch(
            sql_control.CANCEL_REQUESTED, self._store.worker_id, timeout=self._store.command_timeout
        )
        return [r[0] for r in rows]
