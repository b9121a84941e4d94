"""A worker's liveness: hearing new jobs (LISTEN), its heartbeat, and what the heartbeat does
besides: lease recovery of dead workers' jobs, removing long-dead worker rows, purging old
finished jobs, and warning about waiting jobs this worker does not know.

Liveness is a per-worker heartbeat row: a worker that stops beating for ``lease_seconds`` is
dead, and any worker hands its jobs to the queue again (see
``sql_liveness.RECOVER_LOST_JOBS`` for how a buffered job is told from a running one). Both
tasks run on dedicated connections (:mod:`soniq.worker_store`), outside the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from . import retention
from .jobs import JobStatus

if TYPE_CHECKING:
    from .worker import Worker
    from .worker_store import ListenConnection, LivenessConnection, WorkerStore

logger = logging.getLogger("soniq")

MAX_BACKOFF = 10.0


class Liveness:
    """The LISTEN and heartbeat tasks of one worker; they set ``wake`` when the worker should
    look at the queue again (a job was enqueued, a lost job recovered, LISTEN restored)."""

    def __init__(self, worker: Worker, db: WorkerStore, wake: asyncio.Event) -> None:
        self._worker = worker
        self._db = db
        self._wake = wake
        self._warned_unknown: set[str] = set()
        self._purge: asyncio.Task[None] | None = None

    def on_notify(self, payload: object) -> None:
        queues = self._worker.queues
        if queues is None or not isinstance(payload, str) or payload in ("*", ""):
            self._wake.set()
            return
        if any(q in queues for q in payload.split(",")):
            self._wake.set()

    async def listen(self) -> None:
        worker = self._worker
        backoff = 0.25
        interrupted = False
        while not worker.stopping:
            conn: ListenConnection | None = None
            try:
                schedules = worker.schedules
                conn = await self._db.listen(
                    self.on_notify,
                    None if schedules is None else schedules.changed,
                    worker._control.on_notify,
                )
                worker._view.stale = True  # controls may have changed while we were not listening
                if interrupted:
                    logger.info(
                        "LISTEN connection restored; worker %s hears new jobs again",
                        worker.id,
                        extra={"event": "worker.listen_restored", "worker_id": worker.id},
                    )
                interrupted = False
                backoff = 0.25
                self._wake.set()  # anything enqueued while we were not listening
                if schedules is not None:
                    schedules.changed()  # and any schedule changed meanwhile
                while not conn.lost.is_set() and not worker.stopping:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(conn.lost.wait(), worker.heartbeat_interval)
                    if not conn.lost.is_set() and not worker.stopping:
                        await conn.ping()  # an idle socket may die silently; a ping notices
                if conn.lost.is_set() and not worker.stopping:
                    raise ConnectionError("the server closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                interrupted = True
                logger.warning(
                    "LISTEN connection lost (%s); reconnecting in %.2gs",
                    exc,
                    backoff,
                    extra={"event": "worker.listen_lost", "worker_id": worker.id},
                )
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            finally:
                if conn is not None:
                    await conn.close()

    def _start_purge(self) -> None:
        """Retention in a task of its own: a purge may take seconds, and the beat must not wait
        for it (one worker of the fleet purges at a time, see soniq.retention)."""
        app = self._worker.app
        if not retention.enabled(app.settings):
            return
        if self._purge is None or self._purge.done():
            self._purge = asyncio.create_task(self._purge_once(), name="soniq-purge")

    async def _purge_once(self) -> None:
        worker = self._worker
        try:
            purge = await retention.purge_expired(worker.app._admin, worker.app.settings)
        except Exception as exc:
            logger.warning(
                "Retention purge failed (%s: %s); the next one tries again",
                type(exc).__name__,
                exc,
                extra={"event": "worker.purge_failed", "worker_id": worker.id},
            )
            return
        if purge.deleted:
            logger.info(
                "Retention purged %d finished job(s)",
                purge.deleted,
                extra={"event": "worker.purged", "worker_id": worker.id, "jobs": purge.deleted},
            )

    async def heartbeat(self) -> None:
        """Beat until cancelled, which the worker's shutdown does only once no job is left
        running: jobs finishing in the grace period keep their lease too.

        The beat has a connection of its own. On the pool it would queue behind jobs that hold
        pool connections (long transactions), and a live worker would lose its jobs to another.
        """
        worker = self._worker
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        conn: LivenessConnection | None = None
        # Since when this worker has been beating without a failure. Nobody can beat while the
        # database is unreachable, so right after an outage every heartbeat looks stale: only
        # a worker that has itself been beating for a whole lease, which gives every live
        # worker time to beat again, may declare others dead. (At start-up too: a worker that
        # has just connected cannot yet tell a dead neighbour from one still reconnecting.)
        beating_since: float | None = None
        last_beat = loop.time()
        lease_lost = False
        try:
            while True:
                started = loop.time()
                try:
                    if conn is None or conn.is_closed():
                        conn = await self._db.liveness_connection()
                    judge = beating_since is not None and (
                        started - beating_since >= worker.lease_seconds
                    )
                    await self.beat_once(conn, recover=judge)
                    if beating_since is None:
                        beating_since = started
                    last_beat = started
                    lease_lost = False
                    if loop.time() - last_purge > retention.PURGE_EVERY:
                        last_purge = loop.time()
                        self._start_purge()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    beating_since = None
                    logger.warning(
                        "Worker heartbeat failed (%s: %s)",
                        type(exc).__name__,
                        exc,
                        extra={"event": "worker.heartbeat_failed", "worker_id": worker.id},
                    )
                    if conn is not None:
                        conn.terminate()  # a fresh connection next time, not a wedged one
                        conn = None
                    if not lease_lost and loop.time() - last_beat > worker.lease_seconds:
                        lease_lost = True
                        logger.error(
                            "Worker %s has not beaten for over its %.3gs lease; if other "
                            "workers can reach the database they may run its %d job(s) again",
                            worker.id,
                            worker.lease_seconds,
                            worker.running_jobs,
                            extra={"event": "worker.lease_expired", "worker_id": worker.id},
                        )
                # A steady cadence: the time the beat itself took comes off the wait.
                await asyncio.sleep(max(0.0, worker.heartbeat_interval - (loop.time() - started)))
        finally:
            if conn is not None:
                conn.terminate()
            if self._purge is not None:
                self._purge.cancel()  # the worker is stopping; the next purge finishes it

    async def beat_once(self, conn: LivenessConnection, *, recover: bool = True) -> None:
        worker = self._worker
        # Each statement is bounded by the beat interval: a beat stuck on a half-dead socket
        # is abandoned (and the connection replaced) well before the lease runs out.
        if not await conn.beat(timeout=max(worker.heartbeat_interval, 0.5)):
            # Our row was removed as dead during a long outage: come back to life.
            await conn.register_worker()
        if recover:
            await self.recover_lost(conn)
        # A cancel whose NOTIFY this worker missed (LISTEN down); controls read afresh.
        for job_id in await conn.cancel_requested():
            worker._control.cancel(job_id)
        worker._view.stale = True
        for name in await conn.unknown_ready_names():
            if name not in self._warned_unknown:
                self._warned_unknown.add(name)
                logger.warning(
                    "Jobs named %r are waiting but this worker does not know that job; it "
                    "leaves them for a worker that does (is the module with it imported?)",
                    name,
                    extra={"event": "worker.unknown_job", "job_name": name, "worker_id": worker.id},
                )

    async def recover_lost(self, conn: LivenessConnection) -> None:
        worker = self._worker
        recovered = await conn.recover_lost(worker.lease_seconds)
        for job in recovered:
            logger.log(  # a move to the dead-letter queue is an ERROR, however it happens
                logging.ERROR if job.status is JobStatus.DEAD_LETTER else logging.WARNING,
                "Job %s (%s) lost its worker; %s",
                job.job_name,
                job.id,
                "moved to the dead-letter queue (attempts exhausted)"
                if job.status is JobStatus.DEAD_LETTER
                else "queued to run again",
                extra={
                    "event": "job.worker_lost",
                    "job_id": job.id,
                    "job_name": job.job_name,
                    "worker_id": worker.id,
                },
            )
        if recovered:
            self._wake.set()
        await conn.delete_dead_workers(worker.lease_seconds * 10)
