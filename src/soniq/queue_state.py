"""What ``app.queue_state()`` returns: jobs per queue and state, and the live workers.

One cheap statement (``sql.QUEUE_METRICS``, run by the store) that reads only the live rows
through the partial indexes, never the finished ones, so it can be polled every few seconds
forever; the Prometheus gauges are built from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .control import QueueControl

QueueStateName = Literal["ready", "scheduled", "processing", "dead_letter"]
#: ready: due, waiting for a worker; scheduled: delayed or backing off; processing: running;
#: dead_letter: out of attempts.
STATES: tuple[QueueStateName, ...] = ("ready", "scheduled", "processing", "dead_letter")


@dataclass(frozen=True, slots=True)
class QueueCount:
    """How many jobs of ``queue`` are in ``state``. A state without jobs may be left out, or
    given as 0 (a queue with jobs waiting has both a ready and a scheduled count)."""

    queue: str
    state: QueueStateName
    jobs: int
    #: For ``ready`` only: seconds the oldest due job has waited to be claimed (else None).
    oldest_ready_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class QueueState:
    counts: tuple[QueueCount, ...]
    #: Workers whose heartbeat is fresher than the lease.
    workers_live: int
    #: Queues with a control in force (paused, concurrency limit; see docs/job-control.md).
    controls: tuple[QueueControl, ...] = ()

    @classmethod
    def from_rows(cls, rows: Iterable[Any]) -> QueueState:
        """From the rows of ``sql.QUEUE_METRICS`` (the store's side of the statement)."""
        counts = []
        workers = 0
        paused: dict[str, bool] = {}
        limits: dict[str, int] = {}
        for queue, state, jobs, age in rows:
            if state == "workers_live":
                workers = int(jobs)
            elif state == "paused":
                paused[queue] = bool(jobs)
            elif state == "concurrency_limit":
                limits[queue] = int(jobs)
            else:
                counts.append(QueueCount(queue, state, int(jobs), age))
        controls = tuple(
            QueueControl(name, paused=paused.get(name, False), concurrency=limits.get(name))
            for name in sorted(paused.keys() | limits.keys())
        )
        return cls(tuple(counts), workers, controls)
