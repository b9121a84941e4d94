"""The fleet as people look at it: the workers, and what finished in the last window.

Read by the dashboard and the CLI through :meth:`soniq.Soniq.list_workers` and
:meth:`soniq.Soniq.job_stats`; the statements are :data:`soniq.sql_fleet.LIST_WORKERS` and
:data:`soniq.sql_fleet.JOB_STATS`, run by the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict


class WorkerInfo(TypedDict):
    """One worker's row: ``alive`` when it beat within its lease."""

    id: str
    hostname: str
    pid: int
    queues: list[str] | None
    concurrency: int
    started_at: datetime
    heartbeat_at: datetime
    alive: bool


class JobStats(TypedDict):
    """One job name of one queue over the window.

    ``done`` and ``dead_lettered`` count jobs enqueued in the window that have ended, from
    the newest ``sample`` of each. ``exact`` is False when the window held more done jobs
    than that, and ``per_minute`` is then extrapolated from the sample's own span. Run time
    and queue wait percentiles (seconds) come from jobs that ran once; None when none did.
    """

    queue: str
    job_name: str
    done: int
    dead_lettered: int
    per_minute: float
    exact: bool
    run_p50_s: float | None
    run_p95_s: float | None
    wait_p50_s: float | None
