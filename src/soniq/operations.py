"""The fleet-wide operations of :class:`soniq.Soniq` that read or change queues and workers
rather than jobs: queue controls (pause, limits, rates), queue state and status, the workers,
the last window's statistics, and fleet roles. A mixin, as :mod:`soniq.management` is."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .control import QueueControl, check_limit, check_queue_name, check_rate
from .errors import ConfigurationError
from .fleet import JobStats, WorkerInfo
from .fleet_role import FleetRole
from .queue_state import QueueState

if TYPE_CHECKING:
    from .settings import Settings
    from .store import Store


class OperatesQueues:
    """Queue and fleet operations of :class:`soniq.Soniq`."""

    _store: Store
    settings: Settings

    # -- queue controls (stored in the database, for the whole fleet) ----------------------
    async def pause_queue(self, name: str) -> QueueControl:
        """Stop every worker claiming from ``name`` (within a second); running jobs finish and
        enqueues still work."""
        return await self._store.control.set_queue(check_queue_name(name), paused=True)

    async def resume_queue(self, name: str) -> QueueControl:
        return await self._store.control.set_queue(check_queue_name(name), paused=False)

    async def set_queue_limit(self, name: str, limit: int | None) -> QueueControl:
        """At most ``limit`` jobs of ``name`` running at once across all workers (None: no
        limit)."""
        return await self._store.control.set_queue(
            check_queue_name(name), concurrency=check_limit(limit), set_concurrency=True
        )

    async def set_queue_rate(self, name: str, per_second: float | None) -> QueueControl:
        """At most ``per_second`` jobs of ``name`` started per second across all workers, with
        up to one second's worth at once (None: no rate limit)."""
        return await self._store.control.set_queue(
            check_queue_name(name), rate=check_rate(per_second), set_rate=True
        )

    async def queues(self) -> list[QueueControl]:
        """Every queue that has (or had) a control: paused, limit, rate."""
        return await self._store.control.list_queues()

    async def queue_status(self) -> list[dict[str, Any]]:
        """Per queue: counts by status and the age in seconds of the oldest ready job."""
        return await self._store.queue_status()

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker row: id, host, pid, concurrency, queues, start, last beat, and whether
        it beat within its lease (``alive``)."""
        return await self._store.list_workers(self.settings.lease_seconds)

    async def job_stats(
        self, window: float | timedelta = 3600, *, sample: int = 20_000
    ) -> list[JobStats]:
        """Per queue and job name, the jobs that ended in the last ``window`` (seconds): how
        many were done and dead-lettered, jobs per minute, run time p50/p95 and queue wait p50.
        At most ``sample`` of the newest finished jobs of each state are read, so it stays
        cheap on a busy table (see :class:`soniq.fleet.JobStats`)."""
        seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
        if not math.isfinite(seconds) or seconds <= 0:
            raise ConfigurationError(f"window must be a positive number of seconds, not {window!r}")
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
            raise ConfigurationError(f"sample must be a positive integer, not {sample!r}")
        return await self._store.job_stats(seconds, sample)

    async def queue_state(self) -> QueueState:
        """Jobs per queue and state (ready, scheduled, processing, dead_letter), the age of the
        oldest ready job, and the live workers. One cheap statement that never reads finished
        rows, made to be polled (the Prometheus gauges read it); ``queue_status`` counts every
        status, finished ones included, for people."""
        return await self._store.queue_state(self.settings.lease_seconds)

    def fleet_role(self, name: str) -> FleetRole:
        """A role that at most one process of the fleet (every app on this database) holds at
        a time, e.g. the one reporter of fleet-wide gauges: ``await role.try_take()``, then
        ``role.held``, ``await role.release()``. See :class:`soniq.fleet_role.FleetRole`."""
        return FleetRole(self._store, name)
