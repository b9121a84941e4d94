"""The worker: claims jobs, runs each attempt through the middleware chain, records the outcome.

One database round trip records the attempts that finished (or started) since the last one
and claims jobs: as many as there are free slots, counted as started, plus a few claimed ahead
into a local buffer. A job that finishes starts the next buffered one at once, without waiting
for the database, so fast jobs are not limited to one round trip per slot. Liveness is a
per-worker heartbeat row: a worker that stops beating for ``lease_seconds`` is dead, and any
worker hands its jobs to the queue again (see ``sql.RECOVER_LOST_JOBS`` for how a buffered job
is told from a running one).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from . import sql
from .context import AttemptContext
from .errors import ConfigurationError
from .executor import JobExecutor
from .middleware import CallNext, Middleware
from .registry import compact_json
from .store import (
    BAD_DATA_ERRORS,
    CONNECTION_ERRORS,
    Finished,
    Store,
    parse_trace_context,
    storable_text,
)

if TYPE_CHECKING:
    from .app import Soniq

logger = logging.getLogger("soniq")

_MAX_OUTAGE_BACKOFF = 10.0
_PURGE_EVERY = 60.0


class Worker:
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

        self._store: Store = app._store
        self._executor = JobExecutor(settings.thread_pool_size or concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._finished: list[Finished] = []
        # Claimed ahead, not started (row, loop time of the claim); oldest first.
        self._buffer: deque[tuple[asyncpg.Record, float]] = deque()
        # Started from the buffer, start not yet written: job id -> attempt number.
        self._unreported: dict[str, int] = {}
        # Suspect jobs taken from the buffer: they hold a slot, and run once their start is
        # written (a job that may kill its worker must have its attempt counted first).
        self._prestart: list[tuple[asyncpg.Record, float]] = []
        # Whether the queue may hold more than the last claim found.
        self._maybe_more = True
        # Jobs started per second and round-trip seconds (moving averages): how many jobs the
        # worker gets through while one round trip is out, i.e. how many to claim ahead.
        self._start_rate = 0.0
        self._trip_time = 0.0
        self._started = 0
        self._rate_since = 0.0  # loop time and start count the rate is measured from
        self._rate_from = 0
        # Share of started jobs that were on their last attempt or suspect (moving average):
        # those start only after a round trip writes their start, so claiming them ahead gains
        # nothing and costs them a round trip of waiting; the worker claims that much less ahead.
        self._written_first = 0.0
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
        queue_filter = (
            sql.QUEUE_FILTER_ALL
            if queues is None
            else sql.QUEUE_FILTER_ONE
            if len(queues) == 1
            else sql.QUEUE_FILTER_MANY
        )
        self._claim_sql = sql.finish_and_claim(queue_filter)
        self._claim_due_sql = sql.finish_and_claim(queue_filter, with_due=True)
        self._known_names: list[str] = []
        self._warned_unknown: set[str] = set()
        self._background: list[asyncio.Task[None]] = []
        self._held: set[str] = set()
        self._previous_handlers: dict[int, Any] = {}

    # -- public ----------------------------------------------------------------------------
    @property
    def running_jobs(self) -> int:
        return len(self._running)

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
        await self._store.check_schema()
        self._known_names = self.app.registry.names()
        await self._register()
        self.app._worker_started(self)
        self._refresh_chain()
        started: list[Middleware] = []
        try:
            # Inside the try: a user middleware whose startup raises stops the worker, and the
            # layers already started are shut down and the worker deregistered on the way out.
            await self._lifecycle("startup", list(self.app.middleware), started)
            if self.install_signal_handlers:
                self._install_signals()
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
                self._background = [
                    asyncio.create_task(self._listen(), name="soniq-listen"),
                    asyncio.create_task(self._heartbeat(), name="soniq-heartbeat"),
                ]
            await self._loop()
        finally:
            await self._shutdown()
            try:
                await self._lifecycle("shutdown", list(reversed(started)), [])
            finally:
                self._restore_signals()
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
            self._wake.clear()
            self._fill_slots()
            free = self.concurrency - len(self._running) - len(self._prestart)
            # Claim ahead three round trips' worth of starts: enough that fast jobs never wait
            # on the database (and it grows from nothing: a worker that runs through what it has
            # doubles its rate), while slow jobs leave the rest of the queue to other workers.
            ahead = min(
                self.prefetch,
                math.ceil(3 * self._start_rate * self._trip_time * (1.0 - self._written_first)),
            )
            ahead -= len(self._buffer)
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
                self._maybe_more = True  # woken by NOTIFY, the poll, a due job or a slot
                continue
            finished, self._finished = self._finished, []
            starts = self._starts_to_record()
            # Only these have their start in this round trip; more may queue up meanwhile.
            recorded = len(self._prestart)
            with_due = bool(want) and not self._busy
            sent_at = loop.time()
            try:
                rows = await self._round_trip(finished, free, want, starts, with_due)
            except BAD_DATA_ERRORS as exc:
                await self._finish_separately(finished, exc)
                continue
            except CONNECTION_ERRORS as exc:
                self._finished[:0] = finished
                outage_backoff = min(_MAX_OUTAGE_BACKOFF, max(0.25, outage_backoff * 2))
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
            if with_due:
                # Every row carries when the next delayed job comes due (if the claim was
                # short); with nothing claimed, one row of NULLs carries only that.
                due: float | None = rows[0]["next_due_s"]
                if rows[0]["id"] is None:
                    rows = []
            if want:
                self._busy = len(rows) == want
                if not self._busy:
                    self._due_known = with_due
                    if with_due:
                        self._due_at = None if due is None else now + due
            self._measure(sent_at, now)
            for f in starts:
                self._unreported.pop(f.id, None)
            prestart = self._prestart[:recorded]
            del self._prestart[:recorded]
            for row, claimed_at in prestart:
                self._start(row, claimed_at)
            for row in rows:
                if row["counted"]:
                    self._start(row, now)
                else:
                    self._buffer.append((row, now))
            # After _start: the rows just claimed are running or buffered, not claims lost in
            # flight.
            if outage_backoff and await self._after_outage():
                outage_backoff = 0.0
            if want:
                self._maybe_more = len(rows) == want
            if any(f.status == "queued" and not f.refund for f in finished):
                # A job just put back (retry, refund) was invisible to this statement's claim,
                # which saw the table as it was before the finish: look again at once.
                self._maybe_more = True

    def _measure(self, sent_at: float, now: float) -> None:
        """Moving averages of the round-trip time and of the start rate since the last trip."""
        self._trip_time += 0.3 * (now - sent_at - self._trip_time)
        if now > self._rate_since:
            rate = (self._started - self._rate_from) / (now - self._rate_since)
            self._start_rate += 0.3 * (rate - self._start_rate)
        self._rate_since, self._rate_from = now, self._started

    def _fill_slots(self) -> None:
        """Start buffered jobs in the free slots (called as each job ends, and by the loop)."""
        if self._stopping:
            return
        while self._buffer and len(self._running) + len(self._prestart) < self.concurrency:
            row, claimed_at = self._buffer.popleft()
            if _start_written_first(row):
                self._prestart.append((row, claimed_at))
            else:
                self._unreported[row["id"]] = row["attempt"]
                self._start(row, claimed_at)
            self._wake.set()  # the loop writes the start soon

    def _starts_to_record(self) -> list[Finished]:
        """Start records for running jobs that started without the database knowing yet (a job
        that has finished leaves ``_unreported``: its finish record covers its start)."""
        if not self._unreported and not self._prestart:
            return []
        starts = [Finished(i, None, attempt=a) for i, a in self._unreported.items()]
        starts.extend(Finished(r["id"], None, attempt=r["attempt"]) for r, _ in self._prestart)
        return starts

    async def _round_trip(
        self,
        finished: list[Finished],
        free: int,
        want: int = 0,
        starts: list[Finished] | None = None,
        with_due: bool = False,
    ) -> list[asyncpg.Record]:
        """Record ``finished`` and ``starts``; claim up to ``want`` jobs, the first ``free`` of
        them counted as started."""
        done: list[Finished] = []
        other: list[Finished] = []
        for f in finished:
            plain = f.status == "done" and f.result is None and f.trace_context is None
            (done if plain else other).append(f)
        if starts:
            other.extend(starts)
        pool = await self._store.pool()
        return await pool.fetch(
            self._claim_due_sql if with_due else self._claim_sql,
            self.id,
            [f.id for f in other],
            [f.status for f in other],
            [f.result for f in other],
            [f.error for f in other],
            [f.traceback for f in other],
            [f.delay_s for f in other],
            [f.attempt - f.refund for f in other],
            max(0, want),
            self._known_names,
            self.queues,
            [f.trace_context for f in other],
            max(0, free),
            ",".join([f.id for f in done]),
            ",".join([str(f.attempt) for f in done]),
            timeout=self._store.command_timeout,
        )

    async def _query_due(self) -> None:
        try:
            pool = await self._store.pool()
            due = await pool.fetchval(
                sql.NEXT_DUE, self.queues, self._known_names, timeout=self._store.command_timeout
            )
        except CONNECTION_ERRORS:
            return  # poll_interval it is; the next claim will tell
        self._due_at = None if due is None else asyncio.get_running_loop().time() + due
        self._due_known = True

    def _idle_timeout(self, now: float) -> float:
        """How long an idle worker waits: until the next delayed job comes due, at most the
        poll interval (NOTIFY wakes it sooner)."""
        if self._due_at is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, self._due_at - now))

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
            await self._register()
            pool = await self._store.pool()
            # A job that finished since the round trip is neither running nor written yet:
            # it is not a lost claim either; nor is one waiting in the buffer.
            await pool.execute(sql.RELEASE_UNTRACKED, self.id, self._held_ids())
        except CONNECTION_ERRORS:
            return False
        return True

    def _held_ids(self) -> list[str]:
        """Jobs this worker holds and will still run or record."""
        held = [*self._running, *(f.id for f in self._finished)]
        held.extend(row["id"] for row, _ in self._buffer)
        held.extend(row["id"] for row, _ in self._prestart)
        return held

    # -- one attempt -----------------------------------------------------------------------
    def _start(self, row: asyncpg.Record, claimed_at: float) -> None:
        spec = self.app.registry.find(row["job_name"])
        job_id: str = row["id"]
        attempt: int = row["attempt"]
        if spec is None:  # registry shrank at run time; put it back untouched
            self._unreported.pop(job_id, None)
            self._finished.append(Finished(job_id, "queued", refund=1, attempt=attempt))
            return
        self._started += 1
        self._written_first += 0.05 * (_start_written_first(row) - self._written_first)
        waited = row["queue_wait_s"] + (asyncio.get_running_loop().time() - claimed_at)
        ctx = AttemptContext(
            job_id=job_id,
            job_name=spec.name,
            queue=row["queue"],
            attempt=attempt,
            max_attempts=row["max_attempts"],
            priority=row["priority"],
            args=json.loads(row["args"]),
            enqueued_at=row["created_at"],
            scheduled_at=row["scheduled_at"],
            queue_wait_s=max(0.0, waited),
            worker_id=self.id,
            spec=spec,
            trace_context=parse_trace_context(row["trace_context"]),
            revived=row["revived"],
        )
        self._running[job_id] = asyncio.create_task(self._attempt(ctx), name=f"soniq-{job_id}")

    async def _attempt(self, ctx: AttemptContext) -> None:
        try:
            result = await self._call(ctx)
        except asyncio.CancelledError:
            # Only shutdown cancels attempts: the job goes back without using up an attempt.
            if ctx.job_id in self._executor.busy_threads:
                self._held.add(ctx.job_id)  # its thread runs on; see _flush_final
            else:
                self._record(Finished(ctx.job_id, "queued", refund=1, attempt=ctx.attempt))
            return
        except Exception as exc:
            if ctx.outcome is None or ctx.error is not exc:
                ctx.settle_failure(exc)
            if ctx.job_id in self._executor.busy_threads:
                # A timeout ended the attempt but not its thread: until the thread returns, the
                # job stays ours (and beats), so its retry cannot run beside it.
                try:
                    await self._thread_returned(ctx)
                except asyncio.CancelledError:
                    self._held.add(ctx.job_id)  # shutdown meanwhile: see _flush_final
                    raise
            self._record(self._failure(ctx, exc))
        else:
            self._record(
                Finished(
                    ctx.job_id, "done", result=self._encode_result(ctx, result), attempt=ctx.attempt
                )
            )
        finally:
            self._running.pop(ctx.job_id, None)
            self._wake.set()
            self._fill_slots()

    async def _thread_returned(self, ctx: AttemptContext) -> None:
        logger.warning(
            "Job %s (%s) timed out, but its thread cannot be stopped; the job is retried or "
            "dead-lettered only once the thread returns",
            ctx.job_name,
            ctx.job_id,
            extra={"event": "job.thread_overrun", "job_id": ctx.job_id, "worker_id": self.id},
        )
        returned = self._executor.busy_threads.get(ctx.job_id)
        if returned is not None:
            await returned.wait()

    def _record(self, finished: Finished) -> None:
        self._unreported.pop(finished.id, None)  # the finish record carries the start too
        self._finished.append(finished)

    @staticmethod
    def _failure(ctx: AttemptContext, exc: BaseException) -> Finished:
        error = f"{type(exc).__name__}: {exc}"
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        # Tracing may have added the failed attempt's span context for the next attempt to link.
        tc = json.dumps(ctx.trace_context) if ctx.trace_context else None
        if ctx.outcome == "retry":
            return Finished(
                ctx.job_id,
                "queued",
                error=error,
                traceback=tb,
                delay_s=ctx.retry_delay or 0.0,
                trace_context=tc,
                attempt=ctx.attempt,
            )
        return Finished(
            ctx.job_id,
            "dead_letter",
            error=error,
            traceback=tb,
            trace_context=tc,
            attempt=ctx.attempt,
        )

    @staticmethod
    def _encode_result(ctx: AttemptContext, result: Any) -> str | None:
        if result is None:
            return None
        try:
            return compact_json(result)
        except Exception as exc:  # TypeError, ValueError, RecursionError (too deep) ...
            logger.warning(
                "Job %s (%s) returned a value that cannot be stored as JSON (%s); "
                "the job counts as done and its result is not kept",
                ctx.job_name,
                ctx.job_id,
                exc,
            )
            return None

    async def _finish_separately(self, finished: list[Finished], exc: BaseException) -> None:
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
                        if one.status == "done"
                        else "it is stored with the offending characters escaped",
                        extra={"event": "job.unstorable", "job_id": one.id, "worker_id": self.id},
                    )
                    await self._round_trip([_storable(one)], 0)
            except CONNECTION_ERRORS:
                self._finished[:0] = finished[i:]  # the outage handling takes over
                return

    # -- background tasks ------------------------------------------------------------------
    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        if self.queues is None or not isinstance(payload, str) or payload in ("*", ""):
            self._wake.set()
            return
        if any(q in self.queues for q in payload.split(",")):
            self._wake.set()

    async def _listen(self) -> None:
        backoff = 0.25
        interrupted = False
        while not self._stopping:
            conn: asyncpg.Connection[Any] | None = None
            try:
                conn = await self._store.connect()
                lost = asyncio.Event()
                conn.add_termination_listener(_setter(lost))
                await conn.add_listener(sql.NOTIFY_CHANNEL, self._on_notify)
                if interrupted:
                    logger.info(
                        "LISTEN connection restored; worker %s hears new jobs again",
                        self.id,
                        extra={"event": "worker.listen_restored", "worker_id": self.id},
                    )
                interrupted = False
                backoff = 0.25
                self._wake.set()  # anything enqueued while we were not listening
                while not lost.is_set() and not self._stopping:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(lost.wait(), self.heartbeat_interval)
                    if not lost.is_set() and not self._stopping:
                        # An idle socket may die silently; a ping notices.
                        await conn.execute("SELECT 1", timeout=self._store.connect_timeout)
                if lost.is_set() and not self._stopping:
                    raise ConnectionError("the server closed the connection")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                interrupted = True
                logger.warning(
                    "LISTEN connection lost (%s); reconnecting in %.2gs",
                    exc,
                    backoff,
                    extra={"event": "worker.listen_lost", "worker_id": self.id},
                )
                await asyncio.sleep(backoff)
                backoff = min(_MAX_OUTAGE_BACKOFF, backoff * 2)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)

    async def _register(self, conn: asyncpg.Connection[Any] | None = None) -> None:
        target = conn if conn is not None else await self._store.pool()
        await target.execute(
            sql.REGISTER_WORKER,
            self.id,
            socket.gethostname(),
            os.getpid(),
            self.queues,
            self.concurrency,
            timeout=self._store.command_timeout,
        )

    async def _heartbeat(self) -> None:
        """Beat until cancelled, which ``_shutdown`` does only once no job is left running:
        jobs finishing in the grace period keep their lease too.

        The beat has a connection of its own. On the pool it would queue behind jobs that hold
        pool connections (long transactions), and a live worker would lose its jobs to another.
        """
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        conn: asyncpg.Connection[Any] | None = None
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
                        conn = await self._store.connect()
                    judge = beating_since is not None and (
                        started - beating_since >= self.lease_seconds
                    )
                    await self._beat_once(conn, recover=judge)
                    if beating_since is None:
                        beating_since = started
                    last_beat = started
                    lease_lost = False
                    if self.done_retention and loop.time() - last_purge > _PURGE_EVERY:
                        last_purge = loop.time()
                        await conn.execute(
                            sql.PURGE_FINISHED,
                            self.done_retention,
                            timeout=self._store.command_timeout,
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    beating_since = None
                    logger.warning(
                        "Worker heartbeat failed (%s: %s)",
                        type(exc).__name__,
                        exc,
                        extra={"event": "worker.heartbeat_failed", "worker_id": self.id},
                    )
                    if conn is not None:
                        conn.terminate()  # a fresh connection next time, not a wedged one
                        conn = None
                    if not lease_lost and loop.time() - last_beat > self.lease_seconds:
                        lease_lost = True
                        logger.error(
                            "Worker %s has not beaten for over its %.3gs lease; if other "
                            "workers can reach the database they may run its %d job(s) again",
                            self.id,
                            self.lease_seconds,
                            len(self._running),
                            extra={"event": "worker.lease_expired", "worker_id": self.id},
                        )
                # A steady cadence: the time the beat itself took comes off the wait.
                await asyncio.sleep(max(0.0, self.heartbeat_interval - (loop.time() - started)))
        finally:
            if conn is not None:
                conn.terminate()

    async def _beat_once(self, conn: asyncpg.Connection[Any], *, recover: bool = True) -> None:
        # Each statement is bounded by the beat interval: a beat stuck on a half-dead socket
        # is abandoned (and the connection replaced) well before the lease runs out.
        timeout = max(self.heartbeat_interval, 0.5)
        if await conn.fetchval(sql.HEARTBEAT, self.id, timeout=timeout) is None:
            # Our row was removed as dead during a long outage: come back to life.
            await self._register(conn)
        if recover:
            await self._recover_lost(conn)
        unknown = await conn.fetch(
            sql.UNKNOWN_READY_NAMES,
            self.queues,
            self._known_names,
            timeout=self._store.command_timeout,
        )
        for row in unknown:
            name = row[0]
            if name not in self._warned_unknown:
                self._warned_unknown.add(name)
                logger.warning(
                    "Jobs named %r are waiting but this worker does not know that job; it "
                    "leaves them for a worker that does (is the module with it imported?)",
                    name,
                    extra={"event": "worker.unknown_job", "job_name": name, "worker_id": self.id},
                )

    async def _recover_lost(self, conn: asyncpg.Connection[Any]) -> None:
        recovered = await conn.fetch(
            sql.RECOVER_LOST_JOBS, self.lease_seconds, timeout=self._store.command_timeout
        )
        for row in recovered:
            logger.warning(
                "Job %s (%s) lost its worker; %s",
                row["job_name"],
                row["id"],
                "moved to the dead-letter queue (attempts exhausted)"
                if row["status"] == "dead_letter"
                else "queued to run again",
                extra={
                    "event": "job.worker_lost",
                    "job_id": str(row["id"]),
                    "job_name": row["job_name"],
                    "worker_id": self.id,
                },
            )
        if recovered:
            self._wake.set()
        await conn.execute(
            sql.DELETE_DEAD_WORKERS, self.lease_seconds * 10, timeout=self._store.command_timeout
        )

    # -- shutdown --------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        self._stopping = True
        if self._running:
            _done, pending = await asyncio.wait(
                list(self._running.values()), timeout=self.grace_period
            )
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "%d job(s) still running after the %.3gs grace period; putting them back",
                    len(pending),
                    self.grace_period,
                )
                await asyncio.wait(pending, timeout=5)
            # An attempt that ignored its cancellation is still running: like a thread, it
            # keeps its job until this process is gone.
            self._held.update(job_id for job_id, task in self._running.items() if not task.done())
            if self._held:
                logger.warning(
                    "%d job(s) cannot be interrupted (plain `def` jobs run in threads); they "
                    "stay with this worker, their attempt refunded, and go back to the queue "
                    "when its lease runs out (%.3gs), once this process has exited",
                    len(self._held),
                    self.lease_seconds,
                    extra={"event": "worker.jobs_held", "worker_id": self.id},
                )
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(BaseException):
                await task
        await self._flush_final()
        self._executor.shutdown()

    @property
    def held_jobs(self) -> frozenset[str]:
        """Jobs still running in threads after shutdown; the process should exit now so that
        they stop before their lease runs out (``soniq worker`` does)."""
        return frozenset(self._held)

    async def _flush_final(self) -> None:
        held = list(self._held)
        for delay in (0, 0.5, 1, 2):
            if delay:
                await asyncio.sleep(delay)
            try:
                finished, self._finished = self._finished, []
                # A held job started from the buffer has its start written first, so that the
                # refund below finds a counted attempt to refund.
                starts = [
                    Finished(i, None, attempt=a)
                    for i, a in self._unreported.items()
                    if i in self._held
                ]
                try:
                    await self._round_trip(finished, 0, starts=starts)
                    for f in starts:
                        self._unreported.pop(f.id, None)
                except BAD_DATA_ERRORS as exc:
                    await self._finish_separately(finished, exc)
                    if self._finished:
                        continue  # an outage interrupted it: try again after the delay
                pool = await self._store.pool()
                await pool.execute(
                    sql.RELEASE_UNTRACKED, self.id, held, timeout=self._store.command_timeout
                )
                if held:
                    # Handing these back now would let another worker start one while our
                    # thread still runs it. They stay ours, the attempt refunded in advance,
                    # and the lease (which counts an attempt) returns them after we are gone;
                    # so the worker row stays too, for the lease to expire.
                    await pool.execute(
                        sql.REFUND_HELD, self.id, held, timeout=self._store.command_timeout
                    )
                else:
                    await pool.execute(
                        sql.DEREGISTER_WORKER, self.id, timeout=self._store.command_timeout
                    )
                return
            except CONNECTION_ERRORS as exc:
                self._finished[:0] = finished
                logger.warning("Could not record final results (%s); retrying", exc)
        logger.error(
            "Worker %s could not record %d result(s); the lease will recover them",
            self.id,
            len(self._finished),
        )

    # -- signals ---------------------------------------------------------------------------
    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._previous_handlers[sig] = True
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or not supported: the caller stops us

    def _restore_signals(self) -> None:
        if not self._previous_handlers:
            return
        loop = asyncio.get_running_loop()
        for sig in self._previous_handlers:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        self._previous_handlers.clear()

    def _on_signal(self, sig: int) -> None:
        if self._stopping:
            logger.warning("Second %s: exiting at once", signal.Signals(sig).name)
            os._exit(128 + sig)
        logger.info(
            "%s received: finishing running jobs (grace %.3gs)",
            signal.Signals(sig).name,
            self.grace_period,
        )
        self.stop()


def _start_written_first(row: asyncpg.Record) -> bool:
    """Whether a claimed-ahead job may start only once its start is written: a suspect job, and
    a job's last attempt. If such a job killed the worker unrecorded, lease recovery could
    neither count the attempt (the job might never have started: a crash must not dead-letter
    it) nor leave it uncounted (it might be what kills workers, and loop); see
    sql.RECOVER_LOST_JOBS."""
    return bool(row["suspect"] or row["attempt"] >= row["max_attempts"])


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


def _storable(finished: Finished) -> Finished:
    # replace() keeps every other field (status, delay, refund, trace context) as it was.
    return dataclasses.replace(
        finished,
        result=None,
        error=None if finished.error is None else storable_text(finished.error),
        traceback=None if finished.traceback is None else storable_text(finished.traceback),
    )
