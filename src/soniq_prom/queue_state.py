"""Queue-state gauges read from PostgreSQL when scraped: jobs per queue and state, the age of
the oldest ready job, and live workers.

Read through the app's public API only: ``app.queue_state()`` (one cheap statement), its result
reused for ``queue_state_ttl`` seconds so that many scrapers cost one query. In a fleet only the
process holding the fleet role ``REPORTER_ROLE`` (``app.fleet_role``) reports, so ``sum()`` over
every scraped process counts each job once; the role goes with its process when that dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from soniq.queue_state import STATES, QueueState

from .schedule_state import schedule_families

if TYPE_CHECKING:
    from soniq import FleetRole, Soniq
    from soniq.schedules import ScheduleState

#: The fleet role whose holder reports the queue state (see ``app.fleet_role``).
REPORTER_ROLE = "soniq_prom.queue_state_reporter"

_JOBS_HELP = (
    "Jobs in PostgreSQL per queue and state: ready (due, waiting for a worker), scheduled "
    "(delayed or backing off), processing, dead_letter. Reported by one process of the fleet."
)
_AGE_HELP = (
    "Seconds the oldest ready job of the queue has been due without being claimed "
    "(0 when none is ready). Reported by one process of the fleet."
)
_PAUSED_HELP = (
    "1 while the queue is paused (soniq queues pause), else 0; only queues that have controls. "
    "Reported by one process of the fleet."
)
_LIMIT_HELP = (
    "The queue's fleet-wide concurrency limit (soniq queues limit), for limited queues. "
    "Reported by one process of the fleet."
)
_WORKERS_HELP = (
    "Workers whose heartbeat is fresher than the lease. Reported by one process of the fleet."
)


@dataclass(frozen=True)
class QueueSnapshot:
    jobs: dict[tuple[str, str], int]
    oldest_ready_age: dict[str, float]
    workers_live: int
    taken_at: float
    # ``app.scheduler.state()``, read in the same refresh.
    schedules: tuple[ScheduleState, ...] = ()
    paused: dict[str, int] = field(default_factory=dict)
    concurrency_limit: dict[str, int] = field(default_factory=dict)


def build_snapshot(
    state: QueueState, known_queues: Iterable[str], cap: int, overflow: str, taken_at: float
) -> QueueSnapshot:
    """Turn ``app.queue_state()`` into per-queue gauges; every queue gets all four states, and
    queues past ``cap`` are summed into ``overflow`` so totals stay exact."""
    counts: dict[str, dict[str, int]] = {}
    ages: dict[str, float] = {}
    for count in state.counts:
        counts.setdefault(count.queue, dict.fromkeys(STATES, 0))[count.state] = count.jobs
        if count.state == "ready" and count.oldest_ready_age_s is not None:
            ages[count.queue] = max(0.0, count.oldest_ready_age_s)
    known = sorted(set(known_queues))
    for queue in known:
        counts.setdefault(queue, dict.fromkeys(STATES, 0))
    # Registered queues keep their own label first, then the rest by name: a stable choice,
    # so a queue does not flip between its own series and the overflow from one scrape to the
    # next.
    order = known + sorted(q for q in counts if q not in set(known))
    own = set(order[:cap])
    jobs: dict[tuple[str, str], int] = {}
    oldest: dict[str, float] = {}
    for queue in order:
        label = queue if queue in own else overflow
        for name, n in counts[queue].items():
            jobs[(label, name)] = jobs.get((label, name), 0) + n
        oldest[label] = max(oldest.get(label, 0.0), ages.get(queue, 0.0))
    # Queue controls: one series per controlled queue, never capped (there are few).
    paused = {c.name: int(c.paused) for c in state.controls}
    limits = {c.name: c.concurrency for c in state.controls if c.concurrency is not None}
    return QueueSnapshot(
        jobs, oldest, state.workers_live, taken_at, paused=paused, concurrency_limit=limits
    )


class QueueStateCollector:
    """A prometheus_client collector; all database work happens on one event loop (the
    worker's, the ASGI server's, or a thread's own), whatever thread the scrape comes from."""

    def __init__(
        self,
        app: Soniq,
        *,
        ttl: float,
        timeout: float,
        max_queues: int,
        overflow: str,
        on_error: Callable[[BaseException], None],
        known_queues: Callable[[], Sequence[str]] | None = None,
    ) -> None:
        self._app = app
        self._ttl = ttl
        self._timeout = timeout
        self._max_queues = max_queues
        self._overflow = overflow
        self._on_error = on_error
        self._known_queues = known_queues or (lambda: sorted({s.queue for s in app.registry}))
        # A leader that nobody scrapes any more hands the job to one that is scraped.
        self.idle_release = max(120.0, 10 * ttl)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._role: FleetRole = app.fleet_role(REPORTER_ROLE)
        self._release: asyncio.TimerHandle | None = None
        self._background: asyncio.Task[None] | None = None
        self._snapshot: QueueSnapshot | None = None
        self._checked_at = -math.inf
        #: Queries sent so far (the cache is working when scrapes outnumber these).
        self.queries = 0

    # -- prometheus_client collector protocol -------------------------------------------
    def describe(self) -> Iterator[Metric]:
        yield from self._families(None)

    def collect(self) -> Iterator[Metric]:
        self._refresh_for_scrape()
        snapshot = self._snapshot
        if snapshot is None:
            return  # not the reporter (or nothing known yet): report nothing, never zeros
        yield from self._families(snapshot)

    def _families(self, snapshot: QueueSnapshot | None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("soniq_queue_jobs", _JOBS_HELP, labels=("queue", "state"))
        age = GaugeMetricFamily(
            "soniq_queue_oldest_ready_age_seconds", _AGE_HELP, labels=("queue",), unit="seconds"
        )
        workers = GaugeMetricFamily("soniq_workers_live", _WORKERS_HELP)
        paused = GaugeMetricFamily("soniq_queue_paused", _PAUSED_HELP, labels=("queue",))
        limit = GaugeMetricFamily("soniq_queue_concurrency_limit", _LIMIT_HELP, labels=("queue",))
        if snapshot is not None:
            for queue, flag in sorted(snapshot.paused.items()):
                paused.add_metric((queue,), flag)
            for queue, n in sorted(snapshot.concurrency_limit.items()):
                limit.add_metric((queue,), n)
            for (queue, state), n in sorted(snapshot.jobs.items()):
                jobs.add_metric((queue, state), n)
            for queue, seconds in sorted(snapshot.oldest_ready_age.items()):
                age.add_metric((queue,), seconds)
            workers.add_metric((), snapshot.workers_live)
        yield jobs
        yield age
        yield workers
        yield from schedule_families(None if snapshot is None else snapshot.schedules)
        yield paused
        yield limit

    # -- refreshing ----------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        return self._role.held

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Do the database work on ``loop`` from now on."""
        if loop is not self._loop:
            self._forget_loop()
            self._loop = loop

    def _fresh(self) -> bool:
        return time.monotonic() - self._checked_at < self._ttl

    def _refresh_for_scrape(self) -> None:
        loop = self._loop
        if self._fresh() or loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # Called synchronously on the loop that must run the query: waiting would
            # deadlock, so this scrape shows the last result and the next one a fresh one.
            if self._background is None or self._background.done():
                self._background = loop.create_task(self._refresh_here())
            return
        future = asyncio.run_coroutine_threadsafe(self._refresh_here(), loop)
        try:
            future.result(self._timeout + 1.0)
        except (FutureTimeout, asyncio.CancelledError):
            future.cancel()

    async def refresh(self) -> None:
        """Bring the snapshot up to date (at most one query per ttl); never raises."""
        loop = asyncio.get_running_loop()
        home = self._loop
        if home is None or home.is_closed() or not home.is_running():
            self.attach(loop)
        elif home is not loop:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._refresh_here(), home))
            return
        await self._refresh_here()

    async def _refresh_here(self) -> None:
        if self._fresh():
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._fresh():
                return  # another scrape refreshed while this one waited
            try:
                await asyncio.wait_for(self._query(), self._timeout)
            except Exception as exc:
                # Whatever failed, the lock may be gone with the connection and another
                # process reporting already: better no gauge than one counted twice.
                self._snapshot = None
                await self._drop_connection()
                self._on_error(exc)
            finally:
                self._checked_at = time.monotonic()

    async def _query(self) -> None:
        if not await self._role.try_take():
            self._snapshot = None
            return
        self.queries += 1
        state = await self._app.queue_state()
        snapshot = build_snapshot(
            state, self._known_queues(), self._max_queues, self._overflow, time.monotonic()
        )
        schedules = await self._app.scheduler.state()
        self._snapshot = dataclasses.replace(snapshot, schedules=schedules)
        self._schedule_release()

    def _schedule_release(self) -> None:
        if self._release is not None:
            self._release.cancel()
        loop = asyncio.get_running_loop()
        self._release = loop.call_later(
            self.idle_release, lambda: loop.create_task(self._release_if_idle())
        )

    async def _release_if_idle(self) -> None:
        if time.monotonic() - self._checked_at >= self.idle_release:
            await self._drop_connection()
            self._snapshot = None

    async def _drop_connection(self) -> None:
        await self._role.release()

    async def close(self) -> None:
        """Give up the reporter role (if held); a later scrape may take it again."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
        if self._background is not None and not self._background.done():
            self._background.cancel()
            with contextlib.suppress(BaseException):
                await self._background
        await self._drop_connection()
        self._snapshot = None
        self._checked_at = -math.inf

    def _forget_loop(self) -> None:
        # Connections and locks belong to the loop that made them.
        if self._release is not None:
            self._release.cancel()
            self._release = None
        self._role.abandon()
        self._lock = None
        self._background = None
        self._snapshot = None
        self._checked_at = -math.inf
