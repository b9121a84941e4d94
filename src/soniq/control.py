"""Job control: snoozing, cancelling running jobs, pausing and limiting queues.

What the user handles (:class:`Snooze`, :class:`CancelResult`, :class:`QueueControl`) and the
checks on what they pass in. The state lives in PostgreSQL (``soniq_queues``, the job row's
``snoozes`` and ``cancel_requested_at``) so it holds for every worker of the fleet; workers
hear of changes on ``sql.CONTROL_CHANNEL``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import ConfigurationError


class Snooze(Exception):
    """Return or raise ``Snooze(seconds)`` from a job to run it again after ``seconds``.

    The attempt does not count (the next run sees the same ``attempt``); the job's snooze
    count goes up by one, and past the job's ``max_snoozes`` it is dead-lettered instead.
    """

    def __init__(self, seconds: float | timedelta, reason: str | None = None) -> None:
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ConfigurationError(
                f"Snooze({seconds!r}): give the seconds (or a timedelta) to wait, 0 or more"
            )
        if reason is not None and not isinstance(reason, str):
            raise ConfigurationError(f"Snooze(reason={reason!r}): give a string or None")
        super().__init__(f"snoozed for {seconds:g}s" + (f": {reason}" if reason else ""))
        self.seconds = float(seconds)
        self.reason = reason


class CancelResult(str, enum.Enum):
    """What ``app.cancel_job`` did. True only for ``CANCELLED`` (as the bool it replaces)."""

    CANCELLED = "cancelled"  # it was queued: cancelled at once, it never runs
    CANCEL_REQUESTED = "cancel_requested"  # it is running: its worker is told to stop it
    ALREADY_FINISHED = "already_finished"  # done, dead-lettered or cancelled before
    NOT_FOUND = "not_found"

    def __bool__(self) -> bool:
        return self is CancelResult.CANCELLED

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class QueueControl:
    """A queue's controls as stored: paused, fleet-wide concurrency limit, rate (jobs/s)."""

    name: str
    paused: bool = False
    concurrency: int | None = None
    rate: float | None = None
    updated_at: datetime | None = None

    @property
    def controlled(self) -> bool:
        return self.paused or self.concurrency is not None or self.rate is not None


def check_queue_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(
            f"A queue name must be a non-empty string, not {name!r} (e.g. 'emails')"
        )
    return name


def check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"A queue's concurrency limit must be an int of 1 or more (jobs running at once "
            f"across all workers), or None to remove it; not {limit!r}"
        )
    return limit


def check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ConfigurationError(
            f"A queue's rate limit must be a positive number of jobs per second across all "
            f"workers, or None to remove it; not {rate!r}"
        )
    return float(rate)


def check_max_snoozes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"max_snoozes must be an int of 0 or more, or None for no limit; not {value!r}"
        )
    return value
