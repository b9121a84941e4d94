"""Soniq's idea of the current time on the Python side, in one place.

Code that decides "is it due yet?" in Python (schedules computing their next fire time, the
testing kit's inline and capture modes) asks this module instead of ``datetime.now()`` or
``time.time()``, so that ``soniq.testing.Clock.advance`` can move time for all of it at once.
The database keeps its own ``now()``; the testing clock moves stored times instead (see
``soniq.testing``), so SQL on the hot path stays untouched.
"""

from __future__ import annotations

import time as _time
from datetime import datetime, timedelta, timezone

_offset = 0.0


def now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc) + timedelta(seconds=_offset)


def time() -> float:
    """The current Unix time in seconds."""
    return _time.time() + _offset


def offset() -> float:
    """Seconds the clock has been moved forward (0 outside tests)."""
    return _offset


def advance(seconds: float) -> None:
    """Move the Python-side clock forward; used by ``soniq.testing.Clock`` only."""
    global _offset
    if seconds < 0:
        raise ValueError(f"a clock only moves forward; advance({seconds!r}) is negative")
    _offset += seconds


def reset() -> None:
    """Back to real time."""
    global _offset
    _offset = 0.0
