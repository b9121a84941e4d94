"""When a schedule fires: pure functions of the schedule and a ``now`` the caller passes.

Cron is evaluated by cronsim in the schedule's IANA zone (zoneinfo), which handles daylight
saving the way Debian's cron does: a local time that does not exist (spring forward) fires once,
at the first instant after the gap; a local time that happens twice (fall back) fires once, at
its first occurrence. Fields with a wildcard hour (``0 * * * *``) fire every real hour, both
repeated hours included. Intervals are aligned to the Unix epoch (``every=60`` fires on each
whole minute of UTC), so every worker computes the same fire times without talking to the
others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cronsim import CronSim

from .spec import ScheduleSpec

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: A fire time more than this late is "missed" (``missed="skip"`` does not run it).
MISSED_AFTER = timedelta(seconds=60)
#: ``missed="all"`` runs at most this many missed fire times (the latest ones).
CATCH_UP_CAP = 100
# Missed fire times counted one by one after an outage, at most (beyond: counted as this many).
_COUNT_LIMIT = 100_000


def next_fire(spec: ScheduleSpec, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), in UTC."""
    if spec.every is not None:
        step = round(spec.every * 1_000_000)
        since = (after - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=(since // step + 1) * step)
    assert spec.cron is not None
    it = CronSim(spec.cron, after.astimezone(spec.zone))
    while True:
        # cronsim starts from the local wall time; after a fall-back hour that wall time has
        # been seen before, so a result may lie before ``after``: take the next one then.
        found = next(it).astimezone(timezone.utc)
        if found > after:
            return found


def latest_fire(spec: ScheduleSpec, now: datetime) -> datetime | None:
    """The last fire time at or before ``now`` (None if there is none in the last 5 years)."""
    if spec.every is not None:
        step = round(spec.every * 1_000_000)
        since = (now - _EPOCH) // timedelta(microseconds=1)
        return _EPOCH + timedelta(microseconds=(since // step) * step)
    assert spec.cron is not None
    it = CronSim(spec.cron, (now + timedelta(seconds=1)).astimezone(spec.zone), reverse=True)
    floor = now - timedelta(days=5 * 366)
    for found_local in it:
        found = found_local.astimezone(timezone.utc)
        if found <= now:
            return found
        if found < floor:  # pragma: no cover - reverse iteration always moves back
            break
    return None


@dataclass(frozen=True)
class Plan:
    """What to do at ``now``: the fire times to run, how many were missed, what comes next."""

    fire: tuple[datetime, ...]
    missed: int
    next_run_at: datetime


def plan(spec: ScheduleSpec, next_run_at: datetime, now: datetime) -> Plan:
    """The fire times due at ``now`` for a schedule whose next fire time was ``next_run_at``.

    Usually one is due and is run. After the workers were all down, several are due:
    ``missed="latest"`` runs the latest; ``"skip"`` runs none of them (the latest still runs
    if it is less than ``MISSED_AFTER`` late: that is a worker starting, not an outage);
    ``"all"`` runs each, the latest ``CATCH_UP_CAP`` of them. The rest count as missed.
    """
    if next_run_at > now:
        return Plan((), 0, next_run_at)
    due: list[datetime] = []
    count = 0
    t = next_run_at
    while t <= now and count < _COUNT_LIMIT:
        count += 1
        due.append(t)
        if len(due) > CATCH_UP_CAP:
            del due[: len(due) - CATCH_UP_CAP]
        t = next_fire(spec, t)
    if t <= now:  # a very long outage: jump to the end instead of counting every fire time
        last = latest_fire(spec, now)
        if last is not None and last > due[-1]:
            due = [last]
            count += 1
        t = next_fire(spec, now)
    latest = due[-1]
    if spec.missed == "all":
        fire: tuple[datetime, ...] = tuple(due)
    elif spec.missed == "skip" and now - latest > MISSED_AFTER:
        fire = ()
    else:
        fire = (latest,)
    return Plan(fire, count - len(fire), t)
