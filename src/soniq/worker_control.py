"""Job control inside a worker: cancel requests, snoozes, and the queue controls.

The view of the queue controls (pause, limits) is read from ``soniq_queues`` and refreshed when
a control NOTIFY arrives (or the LISTEN connection comes back, or a heartbeat passes). While no
queue has a control the view is empty and the worker claims exactly as it would without this
module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from . import sql, sql_control
from .control import QueueControl, Snooze
from .db_errors import BAD_DATA_ERRORS, CONNECTION_ERRORS
from .errors import DatabaseUnavailable
from .jobs import FinishedAttempt, JobStatus, Outcome

if TYPE_CHECKING:
    from .context import AttemptContext
    from .worker import Worker

logger = logging.getLogger("soniq")

_SNOOZE_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *BAD_DATA_ERRORS)
_CONTROL_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *CONNECTION_ERRORS)
_CANCELLED = JobStatus.CANCELLED
_QUEUED = JobStatus.QUEUED


class ControlView:
    def __init__(self, queues: list[str] | None) -> None:
        self.queues = queues
        self.stale = True  # read soniq_queues before the next claim
        self.controls: dict[str, QueueControl] = {}
        # Limited (concurrency or rate) and not paused, among the queues this worker serves:
        # claimed one by one, each under its queue's lock (sql.claim_limited).
        self.limited: list[str] = []
        # Seconds between two tokens of the fastest rate-limited queue: an idle worker looks
        # again that often, since no NOTIFY says a token is back.
        self.poll_cap: float | None = None
        self._excluded: frozenset[str] = frozenset()
        base = sql.QUEUE_FILTER_ALL if queues is None else sql.QUEUE_FILTER_MANY
        self._filter = base + sql_control.QUEUE_FILTER_UNCONTROLLED
        self._sql: tuple[str, str] | None = None

    @property
    def active(self) -> bool:
        return bool(self.controls)

    def update(self, controls: list[QueueControl]) -> None:
        served = [c for c in controls if self.queues is None or c.name in self.queues]
        self.controls = {c.name: c for c in served}
        self._excluded = frozenset(self.controls)
        self.limited = [
            c.name for c in served if not c.paused and (c.concurrency or c.rate is not None)
        ]
        rates = [c.rate for c in served if not c.paused and c.rate is not None]
        self.poll_cap = max(0.05, 1.0 / max(rates)) if rates else None

    def claim_sql(self, with_due: bool) -> str:
        """The controlled claim: every paused or limited queue left out of it."""
        if self._sql is None:
            self._sql = (
                sql.finish_and_claim(self._filter),
                sql.finish_and_claim(self._filter, with_due=True),
            )
        return self._sql[1] if with_due else self._sql[0]

    def claim_queues(self) -> list[str] | None:
        """The queue list for the controlled claim: the worker's own without controlled ones,
        so its index scan never walks a paused queue's backlog."""
        if self.queues is None:
            return None
        return [q for q in self.queues if q not in self._excluded]


class JobControl:
    """One worker's side of job control; it works on the worker's own bookkeeping."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.view = ControlView(worker.queues)
        # Cancel requests for jobs waiting to start (claimed ahead, start not yet written).
        self._cancel_early: set[str] = set()
        self._refreshing: asyncio.Task[None] | None = None

    # -- cancel ----------------------------------------------------------------------------
    def on_notify(self, payload: object) -> None:
        """The control channel: ``cancel:<job id>`` (any worker's job) or ``queues``."""
        if not isinstance(payload, str):
            return
        if payload.startswith("cancel:"):
            self.cancel(payload[len("cancel:") :])
        elif payload == "queues":
            self.view.stale = True
            self.worker._wake.set()

    def cancel(self, job_id: str) -> None:
        """Stop a job of ours that app.cancel_job asked to stop (any other id: not ours)."""
        w = self.worker
        ctx = w._contexts.get(job_id)
        if ctx is not None:
            if ctx.cancel_requested:
                return
            ctx.cancel_requested = True
            task = w._running.get(job_id)
            logger.info(
                "Job %s (%s): cancel requested%s",
                ctx.job_name,
                job_id,
                "; cancelling its task"
                if ctx.spec.is_async
                else "; it runs in a thread and stops when it returns (it can check "
                "JobContext.cancel_requested)",
                extra={"event": "job.cancel_requested", "job_id": job_id, "worker_id": w.id},
            )
            if ctx.spec.is_async and task is not None and not task.done():
                ctx.outcome = Outcome.CANCELLED  # so the chain's layers tell it from a shutdown
                task.cancel()
            return
        for entry in w._buffer:
            job = entry[0]
            if job.id == job_id:  # claimed ahead, not started: it never will
                w._buffer.remove(entry)
                w._record(FinishedAttempt(job_id, _CANCELLED, refund=1, attempt=job.attempt))
                w._wake.set()
                return
        if any(job.id == job_id for job, _ in w._prestart):
            self._cancel_early.add(job_id)

    def cancelled_early(self, job_id: str) -> bool:
        """Whether a job about to start was asked to stop while it waited for its start."""
        if self._cancel_early and job_id in self._cancel_early:
            self._cancel_early.discard(job_id)
            return True
        return False

    # -- snooze ----------------------------------------------------------------------------
    async def snooze(self, ctx: AttemptContext, snooze: Snooze) -> None:
        """Put the job back snoozed, in a statement of its own (snoozes are rare; it counts
        them and dead-letters past max_snoozes, fenced as a finish is)."""
        w = self.worker
        w._unreported.pop(ctx.job_id, None)  # the statement writes the start too
        try:
            await w.app._store.control.snooze(
                ctx.job_id,
                w.id,
                seconds=snooze.seconds,
                max_snoozes=ctx.spec.max_snoozes,
                attempt=ctx.attempt,
                reason=snooze.reason,
            )
        except _SNOOZE_ERRORS:
            # Not lost: put back uncounted by the next round trip, only the count is missed.
            w._record(
                FinishedAttempt(
                    ctx.job_id, _QUEUED, delay_s=snooze.seconds, refund=1, attempt=ctx.attempt
                )
            )

    # -- queue controls --------------------------------------------------------------------
    async def refresh(self) -> None:
        # Cleared first: a NOTIFY that arrives while this reads marks the view stale again.
        self.view.stale = False
        try:
            controls = await self.worker.app._store.control.queue_controls()
        except _CONTROL_ERRORS:
            self.view.stale = True  # the last view stays; the next wake tries again
            return
        self.view.update(controls)
        self._release_buffered()

    def refresh_soon(self) -> None:
        """Read the controls again in the background: the loop never waits on it (during an
        outage its own round trip meets the error and says so), and a claim sent meanwhile
        still leaves every controlled queue out once the view knows of any."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh_and_wake())

    async def _refresh_and_wake(self) -> None:
        await self.refresh()
        self.worker._wake.set()

    async def close(self) -> None:
        task, self._refreshing = self._refreshing, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _release_buffered(self) -> None:
        """Jobs claimed ahead from a queue just paused or limited go back unstarted (the
        round trip writes them as put back, their attempt not counted): a paused queue's jobs
        must not start, and a limited queue's are claimed under its lock instead."""
        w = self.worker
        controlled = self.view.controls
        if not controlled or not w._buffer:
            return
        keep = [entry for entry in w._buffer if entry[0].queue not in controlled]
        if len(keep) == len(w._buffer):
            return
        for job, _ in w._buffer:
            if job.queue in controlled:
                w._record(FinishedAttempt.put_back(job.id, job.attempt))
        w._buffer.clear()
        w._buffer.extend(keep)
        w._wake.set()

    async def claim_limited(self) -> None:
        """Claim from limited queues into the free slots. Before the round trip that writes
        the finishes: the claim counts the worker's finished jobs free, so a slot a limited
        job just left is refilled one round trip sooner."""
        w = self.worker
        slots = w.concurrency - len(w._running) - len(w._prestart)
        loop = asyncio.get_running_loop()
        taken = 0
        for queue in self.view.limited:
            if taken >= slots or w._stopping:
                break
            try:
                rows = await w.app._store.control.claim_limited(
                    w.id, queue, w._db.known_names, slots - taken, [f.id for f in w._finished]
                )
            except DatabaseUnavailable:
                break  # the round trip's outage handling takes over
            now = loop.time()
            for row in rows:
                w._start(row, now)
            taken += len(rows)
