"""What a schedule is, checked where it is written: cron or interval, time zone, options.

Every check raises :class:`soniq.errors.ConfigurationError` (or ``JobArgumentsError`` for
arguments that do not fit the job) naming the fix, when ``@app.periodic`` or
``app.scheduler.add`` is called, not when the schedule first fires.
"""

from __future__ import annotations

import difflib
import json
import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from cronsim import CronSim, CronSimError

from ..errors import ConfigurationError, JobArgumentsError
from ..registry import JobSpec

Missed = Literal["latest", "skip", "all"]
MISSED_VALUES: tuple[str, ...] = ("latest", "skip", "all")

# cronsim names the field it refused ("Bad day-of-week"); these are the fields in order.
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week", "second")
_CRON_HELP = (
    "fields are: minute hour day-of-month month day-of-week [second], "
    "e.g. '30 9 * * mon-fri' (09:30 on weekdays) or '*/15 * * * *'"
)


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule, as stored in ``soniq_schedules`` (``every`` in seconds)."""

    name: str
    job_name: str
    cron: str | None
    every: float | None
    timezone: str
    args: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    missed: Missed = "latest"
    overlap: bool = True
    jitter: float = 0.0
    source: Literal["code", "api"] = "code"
    # Parsed once: the IANA zone cron is evaluated in.
    zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "zone", zoneinfo.ZoneInfo(self.timezone))

    @property
    def args_json(self) -> str:
        return json.dumps(self.args, separators=(",", ":"), sort_keys=True)

    @property
    def timetable(self) -> str:
        return f"cron {self.cron!r} ({self.timezone})" if self.cron else f"every {self.every:g}s"


def check_timezone(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            f"timezone must be an IANA zone name such as 'Europe/Berlin' or 'UTC', not {name!r}"
        )
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, zoneinfo.available_timezones(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigurationError(
            f"unknown time zone {name!r}: {hint}use an IANA zone name such as 'Europe/Berlin', "
            f"'America/New_York' or 'UTC' (the tzdata package provides them where the system "
            f"has none)"
        ) from None
    return str(name)


def check_cron(expr: Any, zone: str = "UTC") -> str:
    """The expression, if cronsim accepts it; otherwise an error naming the bad field."""
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigurationError(f"cron must be a cron expression string; {_CRON_HELP}")
    expr = " ".join(expr.split())
    try:
        CronSim(expr, datetime.now(zoneinfo.ZoneInfo(zone)))
    except CronSimError as exc:
        message = str(exc)
        parts = expr.split(" ")
        for index, name in enumerate(_FIELDS):
            if message.lower().endswith(name) and index < len(parts):
                raise ConfigurationError(
                    f"cron {expr!r}: the {name} field {parts[index]!r} is not valid; {_CRON_HELP}"
                ) from None
        raise ConfigurationError(f"cron {expr!r}: {message}; {_CRON_HELP}") from None
    return str(expr)


def check_every(every: Any) -> float:
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, (int, float)) and not isinstance(every, bool):
        seconds = float(every)
    else:
        raise ConfigurationError(
            f"every must be a timedelta or a number of seconds, not {every!r}; "
            f"e.g. every=timedelta(minutes=5) or every=300"
        )
    if not math.isfinite(seconds) or seconds < 1:
        raise ConfigurationError(
            f"every={every!r} is under one second; schedules fire at most once a second, "
            f"use every=1 or more (or a cron expression)"
        )
    return seconds


def make_schedule(
    job: JobSpec,
    *,
    name: str | None,
    cron: str | None,
    every: timedelta | float | None,
    timezone_name: str | None,
    args: dict[str, Any] | None,
    missed: str,
    overlap: bool,
    jitter: float,
    source: Literal["code", "api"],
) -> ScheduleSpec:
    """Check every option of a schedule for ``job``; the first problem found raises."""
    name = job.name if name is None else name
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a schedule's name must be a non-empty string, not {name!r}")
    if (cron is None) == (every is None):
        raise ConfigurationError(
            f"schedule {name!r}: give exactly one of cron='...' (a cron expression) or "
            f"every=... (seconds or a timedelta), not "
            f"{'both' if cron is not None else 'neither'}"
        )
    zone = check_timezone("UTC" if timezone_name is None else timezone_name)
    if every is not None and timezone_name not in (None, "UTC"):
        raise ConfigurationError(
            f"schedule {name!r}: timezone applies to cron only; an interval (every=) is the "
            f"same in every zone, so leave timezone out"
        )
    cron_expr = check_cron(cron, zone) if cron is not None else None
    every_s = check_every(every) if every is not None else None
    if missed not in MISSED_VALUES:
        raise ConfigurationError(
            f"schedule {name!r}: missed={missed!r} is not one of 'latest' (run once for the "
            f"latest missed fire time, the default), 'skip' (run none) or 'all' (run each, "
            f"up to a cap)"
        )
    if not isinstance(overlap, bool):
        raise ConfigurationError(f"schedule {name!r}: overlap must be True or False")
    if (
        isinstance(jitter, bool)
        or not isinstance(jitter, (int, float))
        or not math.isfinite(jitter)
        or jitter < 0
    ):
        raise ConfigurationError(
            f"schedule {name!r}: jitter must be a number of seconds >= 0, not {jitter!r}"
        )
    args = {} if args is None else args
    if not isinstance(args, dict):
        raise JobArgumentsError(
            f"schedule {name!r}: schedule_args must be a dict of keyword arguments for "
            f"{job.name}, not {type(args).__name__}"
        )
    try:
        args = json.loads(job.bind(args))
    except JobArgumentsError as exc:
        raise JobArgumentsError(f"schedule {name!r}: schedule_args do not fit: {exc}") from None
    return ScheduleSpec(
        name=name,
        job_name=job.name,
        cron=cron_expr,
        every=every_s,
        timezone=zone,
        args=args,
        queue=job.queue,
        priority=job.priority,
        max_attempts=job.max_attempts,
        missed=missed,  # type: ignore[arg-type]
        overlap=overlap,
        jitter=float(jitter),
        source=source,
    )


def as_utc(value: datetime) -> datetime:
    return value.astimezone(timezone.utc)
