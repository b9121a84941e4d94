"""The worker: claims jobs, runs each attempt through the middleware chain, records the outcome.

One database round trip (:meth:`soniq.worker_store.WorkerStore.finish_and_claim`) records the
attempts that finished (or started) since the last one and claims jobs: as many as there are
free slots, counted as started, plus a few claimed ahead into a local buffer
(:mod:`soniq.claim_ahead` says how many). A job that finishes starts the next buffered one at
once, without waiting for the database, so fast jobs are not limited to one round trip per slot.
This module is that loop and the worker's state; one attempt (start, chain, finish record) is
in :mod:`soniq.attempts`, the graceful stop and final flush in :mod:`soniq.worker_stop` (both
mixins of :class:`Worker`). Liveness (LISTEN, heartbeat, lease recovery) is in
:mod:`soniq.liveness`, job control in :mod:`soniq.worker_control`, stop signals in
:mod:`soniq.signals`; the statements the worker sends in :mod:`soniq.worker_store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections import deque
from typing import TYPE_CHECKING

from .attempts import RunsAttempts
from .claim_ahead import ClaimAhead
from .context import AttemptContext
from .db_errors import BAD_DATA_ERRORS, CONNECTION_ERRORS
from .errors import ConfigurationError
from .executor import JobExecutor
from .jobs import Claim, ClaimedJob, FinishedAttempt, JobStatus, StartedAttempt
from .liveness import MAX_BACKOFF, Liveness
from .middleware import CallNext, Middleware
from .signals import StopOnSignal
from .worker_control import JobControl
from .worker_stop import StopsGracefully
from .worker_store import WorkerStore

if TYPE_CHECKING:
    from .app import Soniq
    from .schedules import ScheduleRunner

logger = logging.getLogger("soniq")

_DONE = JobStatus.DONE
_QUEUED = JobStatus.QUEUED


class Worker(RunsAttempts, StopsGracefully):
    def __init__(
        self,
        app: Soniq,
        *,
        concurrency: int | None = None,
        queues: list[str] | None = None,
        run_once: bool = False,
        install_signal_handlers: bool = True,
    ) -> None:
        settings = app.settings
        concurrency = settings.concurrency if concurrency is None else concurrency
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigurationError(
                f"concurrency must be a positive integer (jobs run at once), not {concurrency!r}"
            )
        queues = settings.queues if queues is None else queues
        if queues is not None:
            queues = [q.strip() for q in queues if q and q.strip()]
            if not queues:
                raise ConfigurationError("queues must name at least one queue, or be None for all")
        self.app = app
        self.concurrency = concurrency
        self.queues = queues
        self.run_once = run_once
        self.install_signal_handlers = install_signal_handlers
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_interval = settings.poll_interval
        self.lease_seconds = settings.lease_seconds
        self.heartbeat_interval = settings.heartbeat_interval
        self.grace_period = settings.grace_period
        self.done_retention = settings.done_retention
        self.prefetch = settings.prefetch

        self._db = WorkerStore(app._store, self.id, queues, concurrency)
        self._executor = JobExecutor(settings.thread_pool_size or concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._contexts: dict[str, AttemptContext] = {}  # of the running jobs
        # Job control: cancel requests, snoozes, and the queue controls (pause, limits) as
        # last read (none: the worker claims as if job control did not exist).
        self._control = JobControl(self)
        self._view = self._db.control_view = self._control.view
        self._finished: list[FinishedAttempt] = []
        # Claimed ahead, not started (job, loop time of the claim); oldest first.
        self._buffer: deque[tuple[ClaimedJob, float]] = deque()
        # Started from the buffer, start not yet written: job id -> attempt number.
        self._unreported: dict[str, int] = {}
        # Suspect jobs taken from the buffer: they hold a slot, and run once their start is
        # written (a job that may kill its worker must have its attempt counted first).
        self._prestart: list[tuple[ClaimedJob, float]] = []
        # Whether the queue may hold more than the last claim found.
        self._maybe_more = True
        self._ahead = ClaimAhead(self.prefetch)
        # When the next delayed job or retry comes due (loop time), as the last short claim saw
        # (known once a claim that asked came back short).
        self._due_at: float | None = None
        self._due_known = False
        # Whether the last claim came back full: a busy worker's claims leave out the due time.
        self._busy = False
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._call: CallNext = self._executor
        self._liveness = Liveness(self, self._db, self._wake)
        self._background: list[asyncio.Task[None]] = []
        self._held: set[str] = set()
        self._signals = StopOnSignal(self)
        # The firing loop of the schedules (soniq.schedules), not with run_once.
        self.schedules: ScheduleRunner | None = None

    # -- public ----------------------------------------------------------------------------
    @property
    def running_jobs(self) -> int:
        return len(self._running)

    @property
    def stopping(self) -> bool:
        """True once the worker was told to stop (it no longer claims)."""
        return self._stopping

    def stop(self) -> None:
        """Stop claiming; running jobs get the grace period to finish."""
        if not self._stopping:
            logger.info(
                "Worker %s stopping",
                self.id,
                extra={"event": "worker.stopping", "worker_id": self.id},
            )
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        await self.app._store.check_schema()
        self._db.known_names = self.app.registry.names()
        await self._db.register_worker()
        self.app._worker_started(self)
        self._refresh_chain()
        started: list[Middleware] = []
        try:
            # Inside the try: a user middleware whose startup raises stops the worker, and the
            # layers already started are shut down and the worker deregistered on the way out.
            await self._lifecycle("startup", list(self.app.middleware), started)
            if self.install_signal_handlers:
                self._signals.install()
            logger.info(
                "Worker %s started (concurrency %d, queues %s)",
                self.id,
                self.concurrency,
                ",".join(self.queues) if self.queues else "all",
                extra={
                    "event": "worker.started",
                    "worker_id": self.id,
                    "concurrency": self.concurrency,
                    "queues": self.queues,
                },
            )
            if not self.run_once:
                from .schedules import ScheduleRunner

                self.schedules = ScheduleRunner(self.app, self.id)
                self._background = [
                    asyncio.create_task(self._liveness.heartbeat(), name="soniq-heartbeat"),
                    asyncio.create_task(self.schedules.run(), name="soniq-schedules"),
                ]
                if self._db.listens:  # else (PgBouncer, no direct URL): poll_interval
                    self._background.append(
                        asyncio.create_task(self._liveness.listen(), name="soniq-listen")
                    )
            await self._control.refresh()  # before the first claim: a paused queue stays so
            await self._loop()
        finally:
            await self._shutdown()
            try:
                await self._lifecycle("shutdown", list(reversed(started)), [])
            finally:
                self._signals.restore()
                self.app._worker_stopped(self)
                self._stopped.set()

    async def _lifecycle(
        self, event: str, middlewares: list[Middleware], done: list[Middleware]
    ) -> None:
        """Run a startup/shutdown method on each middleware, appending each to ``done``.

        A telemetry layer's failure is reported and never stops the worker. A user middleware's
        startup failure stops the startup at once; at shutdown every layer still gets its call
        and the first user failure is raised after the last one.
        """
        failure: Exception | None = None
        for mw in middlewares:
            try:
                await getattr(mw, event)(self)
            except Exception as exc:
                if mw.telemetry:
                    self.app.middleware.report_telemetry_error(mw, exc)
                elif event == "startup":
                    raise
                elif failure is None:
                    failure = exc
            done.append(mw)
        if failure is not None:
            raise failure

    # -- main loop -------------------------------------------------------------------------
    async def _loop(self) -> None:
        outage_backoff = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            self._refresh_chain()
            if self._view.stale:
                self._control.refresh_soon()
            self._fill_slots()
            if self._view.limited:
                await self._control.claim_limited()
            free = self.concurrency - len(self._running) - len(self._prestart)
            ahead = self._ahead.ahead() - len(self._buffer)
            want = free + max(0, ahead) if self._maybe_more else 0
            if not (want or self._finished or self._unreported or self._prestart):
                if self.run_once and not self._running and not self._buffer:
                    return
                if free <= 0 or self.run_once:
                    await self._wake.wait()  # a finishing job frees a slot or leaves a result
                else:
                    if not self._due_known:
                        await self._query_due()
                    await self._sleep(self._idle_timeout(loop.time()))
                # Cleared once it has woken this wait, never at the top of the loop: a NOTIFY
                # that lands during a round trip (a job enqueued after the claim's snapshot)
                # must wake the next wait, or the worker sleeps until its poll.
                self._wake.clear()
                self._maybe_more = True  # woken by NOTIFY, the poll, a due job or a slot
                continue
            finished, self._finished = self._finished, []
            starts = self._starts_to_record()
            # Only these have their start in this round trip; more may queue up meanwhile.
            recorded = len(self._prestart)
            with_due = bool(want) and not self._busy
            sent_at = loop.time()
            try:
                claim = await self._round_trip(finished, free, want, starts, with_due)
            except BAD_DATA_ERRORS as exc:
                await self._finish_separately(finished, exc)
                continue
            except CONNECTION_ERRORS as exc:
                self._finished[:0] = finished
                outage_backoff = min(MAX_BACKOFF, max(0.25, outage_backoff * 2))
                logger.warning(
                    "Database unavailable (%s: %s); worker %s retries in %.2gs",
                    type(exc).__name__,
                    exc,
                    self.id,
                    outage_backoff,
                    extra={"event": "worker.db_unavailable", "worker_id": self.id},
                )
                await self._sleep(outage_backoff)
                continue
            except BaseException:
                # Unforeseen: the worker stops, but the final flush still tries to write these.
                self._finished[:0] = finished
                raise
            now = loop.time()
            jobs = claim.jobs
            if want:
                self._busy = len(jobs) == want
                if not self._busy:
                    self._due_known = with_due
                    if with_due:
                        due = claim.next_due_s
                        self._due_at = None if due is None else now + due
            self._ahead.round_trip(sent_at, now)
            for f in starts:
                self._unreported.pop(f.id, None)
            prestart = self._prestart[:recorded]
            del self._prestart[:recorded]
            for job, claimed_at in prestart:
                self._start(job, claimed_at)
            for job in jobs:
                if job.counted:
                    self._start(job, now)
                else:
                    self._buffer.append((job, now))
            # After _start: the rows just claimed are running or buffered, not claims lost in
            # flight.
            if outage_backoff and await self._after_outage():
                outage_backoff = 0.0
            if want:
                self._maybe_more = len(jobs) == want
            if any(f.status is _QUEUED and not f.refund for f in finished):
                # A job just put back (retry, refund) was invisible to this statement's claim,
                # which saw the table as it was before the finish: look again at once.
                self._maybe_more = True

    def _fill_slots(self) -> None:
        """Start buffered jobs in the free slots (called as each job ends, and by the loop)."""
        if self._stopping:
            return
        while self._buffer and len(self._running) + len(self._prestart) < self.concurrency:
            job, claimed_at = self._buffer.popleft()
            if job.start_written_first:
                self._prestart.append((job, claimed_at))
            else:
                self._unreported[job.id] = job.attempt
                self._start(job, claimed_at)
            self._wake.set()  # the loop writes the start soon

    def _starts_to_record(self) -> list[StartedAttempt]:
        """Start records for running jobs that started without the database knowing yet (a job
        that has finished leaves ``_unreported``: its finish record covers its start)."""
        if not self._unreported and not self._prestart:
            return []
        starts = [StartedAttempt(i, a) for i, a in self._unreported.items()]
        starts.extend(StartedAttempt(job.id, job.attempt) for job, _ in self._prestart)
        return starts

    async def _round_trip(
        self,
        finished: list[FinishedAttempt],
        free: int,
        want: int = 0,
        starts: list[StartedAttempt] | None = None,
        with_due: bool = False,
    ) -> Claim:
        """Record ``finished`` and ``starts``; claim up to ``want`` jobs, the first ``free`` of
        them counted as started."""
        return await self._db.finish_and_claim(
            finished, starts or (), free=free, want=want, with_due=with_due
        )

    async def _query_due(self) -> None:
        try:
            due = await self._db.next_due()
        except CONNECTION_ERRORS:
            return  # poll_interval it is; the next claim will tell
        self._due_at = None if due is None else asyncio.get_running_loop().time() + due
        self._due_known = True

    def _idle_timeout(self, now: float) -> float:
        """How long an idle worker waits: until the next delayed job comes due, at most the
        poll interval (NOTIFY wakes it sooner)."""
        poll = self.poll_interval
        if self._view.poll_cap is not None:
            poll = min(poll, self._view.poll_cap)
        if self._due_at is None:
            return poll
        return min(poll, max(0.0, self._due_at - now))

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _refresh_chain(self) -> None:
        # The chain compiles itself once per edit; between edits this is one dict lookup.
        self._call = self.app.middleware.job_call(self._executor)

    async def _after_outage(self) -> bool:
        """Release the claims a lost response may have left us holding; False to try again
        after the next round trip (the database went away again)."""
        logger.info(
            "Database connection restored; worker %s carries on",
            self.id,
            extra={"event": "worker.db_restored", "worker_id": self.id},
        )
        try:
            await self._db.register_worker()
            # A job that finished since the round trip is neither running nor written yet:
            # it is not a lost claim either; nor is one waiting in the buffer.
            await self._db.release_untracked(self._held_ids())
        except CONNECTION_ERRORS:
            return False
        return True

    def _held_ids(self) -> list[str]:
        """Jobs this worker holds and will still run or record."""
        held = [*self._running, *(f.id for f in self._finished)]
        held.extend(job.id for job, _ in self._buffer)
        held.extend(job.id for job, _ in self._prestart)
        return held

    async def _finish_separately(self, finished: list[FinishedAttempt], exc: BaseException) -> None:
        """The database refused a round trip's data. One unstorable result or error text must
        neither stop the worker nor lose the other results: write them one at a time, and a
        refused one without its result and with its texts escaped."""
        if not finished:
            raise exc  # nothing of ours in it: the claim itself is refused (bad queue names?)
        for i, one in enumerate(finished):
            try:
                try:
                    await self._round_trip([one], 0)
                except BAD_DATA_ERRORS as refused:
                    logger.warning(
                        "Job %s: the database cannot store its %s (%s); %s",
                        one.id,
                        "result" if one.result is not None else "error text",
                        refused,
                        "the job counts as done and its result is not kept"
                        if one.status is _DONE
                        else "it is stored with the offending characters escaped",
                        extra={"event": "job.unstorable", "job_id": one.id, "worker_id": self.id},
                    )
                    await self._round_trip([one.storable()], 0)
            except CONNECTION_ERRORS:
                self._finished[:0] = finished[i:]  # the outage handling takes over
                return
