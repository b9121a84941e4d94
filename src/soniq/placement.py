"""Where and when a new job goes: its queue, priority and due time, checked once per enqueue
call, and its id (a UUIDv7, time-ordered)."""

from __future__ import annotations

import math
import os
import time
from datetime import datetime, timedelta

from .errors import ConfigurationError
from .registry import JobSpec


def place(
    spec: JobSpec,
    queue: str | None,
    priority: int | None,
    scheduled_at: datetime | timedelta | float | None,
) -> tuple[str, int, datetime | None, float]:
    """Queue, priority, absolute time and delay for jobs of ``spec``, checked once per call."""
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise ConfigurationError(f"queue must be a non-empty string, not {queue!r}")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise ConfigurationError(f"priority must be an int (lower runs first), not {priority!r}")
    at, delay = _when(scheduled_at)
    return queue or spec.queue, spec.priority if priority is None else priority, at, delay


def new_job_id(rand: str | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version, 74 random bits.

    Ids sort by creation time, so each new row and each new row version lands on the right-most
    pages of the primary key instead of a random page: fewer pages touched and written per job.
    ``rand`` is 20 random hex digits (a batch reads them from the OS in one call).
    """
    millis = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    if rand is None:
        rand = os.urandom(10).hex()
    # version nibble 7; the variant takes the top two bits of the fourth group (10xx)
    return f"{millis[:8]}-{millis[8:]}-7{rand[:3]}-{_VARIANT[rand[3]]}{rand[4:7]}-{rand[7:19]}"


# A random hex digit -> the same digit with its top two bits set to the RFC 9562 variant (10).
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _when(value: datetime | timedelta | float | None) -> tuple[datetime | None, float]:
    if value is None:
        return None, 0.0
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"scheduled_at={value!r} has no timezone; pass an aware datetime "
                f"(e.g. datetime.now(timezone.utc) + timedelta(minutes=5)), a timedelta or seconds"
            )
        return value, 0.0
    if isinstance(value, timedelta):
        return None, value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return None, float(value)
    raise ConfigurationError(
        f"scheduled_at must be an aware datetime, a timedelta or a number of seconds, not {value!r}"
    )
