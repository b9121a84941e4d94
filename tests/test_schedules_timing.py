"""When schedules fire, with a fixed clock: the pure functions of soniq.schedules.timing, and
the checks that refuse a bad schedule where it is written."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from soniq import ConfigurationError, JobArgumentsError, Soniq
from soniq.schedules import CATCH_UP_CAP, ScheduleSpec, next_fire, plan

UTC = timezone.utc


def cron(expr: str, tz: str, missed: str = "latest") -> ScheduleSpec:
    return ScheduleSpec("s", "job", expr, None, tz, {}, "default", 0, 1, missed)  # type: ignore[arg-type]


def every(seconds: float, missed: str = "latest") -> ScheduleSpec:
    return ScheduleSpec("s", "job", None, seconds, "UTC", {}, "default", 0, 1, missed)  # type: ignore[arg-type]


def fires(spec: ScheduleSpec, start: datetime, until: datetime) -> list[datetime]:
    """Every fire time after ``start`` up to ``until``, as a worker would walk them."""
    out = []
    t = next_fire(spec, start)
    while t <= until:
        out.append(t)
        t = next_fire(spec, t)
    return out


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- daylight saving --------------------------------------------------------------------------
# Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25 03:00 CEST -> 02:00
# CET (01:00 UTC). America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01
# 02:00 EDT -> 01:00 EST (06:00 UTC).


@pytest.mark.parametrize(
    ("tz", "expr", "start", "expected"),
    [
        # 02:30 does not exist that night: one fire, at 03:00 local, the first instant after.
        ("Europe/Berlin", "30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 0)),
        ("America/New_York", "30 2 * * *", utc(2026, 3, 7, 12), utc(2026, 3, 8, 7, 0)),
        ("Europe/Berlin", "15 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 0)),
    ],
)
def test_spring_forward_fires_once_right_after_the_gap(
    tz: str, expr: str, start: datetime, expected: datetime
) -> None:
    spec = cron(expr, tz)
    got = fires(spec, start, start + timedelta(days=2))
    assert got[0] == expected
    assert got[0].astimezone(ZoneInfo(tz)).strftime("%H:%M") == "03:00"
    # The next day it is 02:xx local again, once.
    assert len(got) == 2
    assert got[1].astimezone(ZoneInfo(tz)).hour == 2


@pytest.mark.parametrize(
    ("tz", "expr", "start", "expected"),
    [
        # 02:30 happens twice (CEST, then CET): one fire, at the first.
        ("Europe/Berlin", "30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),
        # 01:30 happens twice (EDT, then EST): one fire, at the first.
        ("America/New_York", "30 1 * * *", utc(2026, 10, 31, 12), utc(2026, 11, 1, 5, 30)),
    ],
)
def test_fall_back_fires_a_repeated_time_once(
    tz: str, expr: str, start: datetime, expected: datetime
) -> None:
    spec = cron(expr, tz)
    got = fires(spec, start, start + timedelta(hours=36))
    assert got == [expected]
    # A worker that looks again from inside the repeated hour does not fire it a second time.
    second_time = expected + timedelta(hours=1, minutes=5)
    assert second_time.astimezone(ZoneInfo(tz)).fold == 1
    assert next_fire(spec, second_time) == expected + timedelta(days=1, hours=1)


def test_an_hourly_cron_fires_every_real_hour_across_both_changes() -> None:
    spec = cron("0 * * * *", "Europe/Berlin")
    # The spring-forward day has 23 hours, the fall-back day 25: a fire each hour, none twice.
    spring = fires(spec, utc(2026, 3, 28, 23) - timedelta(seconds=1), utc(2026, 3, 29, 21, 59))
    assert len(spring) == 23 and len(set(spring)) == 23
    fall = fires(spec, utc(2026, 10, 24, 22) - timedelta(seconds=1), utc(2026, 10, 25, 22, 59))
    assert len(fall) == 25 and len(set(fall)) == 25


def test_cron_is_evaluated_in_the_schedules_zone() -> None:
    start = utc(2026, 6, 1, 0, 0)  # a Monday
    assert next_fire(cron("30 9 * * mon-fri", "Europe/Berlin"), start) == utc(2026, 6, 1, 7, 30)
    assert next_fire(cron("30 9 * * mon-fri", "America/New_York"), start) == utc(2026, 6, 1, 13, 30)
    assert next_fire(cron("30 9 * * mon-fri", "UTC"), start) == utc(2026, 6, 1, 9, 30)
    # Saturday evening in Berlin: the next weekday fire is Monday.
    assert next_fire(cron("30 9 * * mon-fri", "Europe/Berlin"), utc(2026, 6, 6, 18)) == utc(
        2026, 6, 8, 7, 30
    )


def test_intervals_are_aligned_to_the_epoch_and_strictly_after() -> None:
    spec = every(30)
    assert next_fire(spec, utc(2026, 1, 1, 0, 0, 10)) == utc(2026, 1, 1, 0, 0, 30)
    assert next_fire(spec, utc(2026, 1, 1, 0, 0, 30)) == utc(2026, 1, 1, 0, 1, 0)
    odd = every(1.5)
    got = fires(odd, utc(2026, 1, 1), utc(2026, 1, 1, 0, 0, 6))
    assert [t.second + t.microsecond / 1e6 for t in got] == [1.5, 3.0, 4.5, 6.0]


# -- missed fires -----------------------------------------------------------------------------
def test_on_time_one_fire_is_due() -> None:
    spec = every(60)
    p = plan(spec, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 0, 0, 300_000))
    assert p.fire == (utc(2026, 1, 1, 12, 0),) and p.missed == 0
    assert p.next_run_at == utc(2026, 1, 1, 12, 1)
    early = plan(spec, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 11, 59, 59))
    assert early.fire == () and early.next_run_at == utc(2026, 1, 1, 12, 0)


@pytest.mark.parametrize(
    ("missed", "fired_hours", "missed_count"),
    [("latest", [9], 9), ("skip", [], 10), ("all", list(range(10)), 0)],
)
def test_after_an_outage_the_missed_policy_decides(
    missed: str, fired_hours: list[int], missed_count: int
) -> None:
    # Hourly; the workers were down from 23:30 to 09:20: ten fire times passed (00:00..09:00).
    spec = cron("0 * * * *", "UTC", missed)
    p = plan(spec, utc(2026, 1, 2, 0), utc(2026, 1, 2, 9, 20))
    assert p.fire == tuple(utc(2026, 1, 2, h) for h in fired_hours)
    assert p.missed == missed_count
    assert p.next_run_at == utc(2026, 1, 2, 10)


def test_skip_still_runs_a_fire_that_is_only_a_little_late() -> None:
    spec = every(60, "skip")
    p = plan(spec, utc(2026, 1, 1, 12, 0), utc(2026, 1, 1, 12, 0, 20))
    assert p.fire == (utc(2026, 1, 1, 12, 0),) and p.missed == 0


def test_all_is_capped() -> None:
    spec = every(1, "all")
    start = utc(2026, 1, 1)
    p = plan(spec, start, start + timedelta(seconds=999))
    assert len(p.fire) == CATCH_UP_CAP == 100
    assert p.fire[-1] == start + timedelta(seconds=999)
    assert p.missed == 1000 - CATCH_UP_CAP


def test_a_very_long_outage_is_not_walked_fire_by_fire() -> None:
    spec = every(1)
    start = utc(2020, 1, 1)
    p = plan(spec, start, utc(2026, 1, 1, 0, 0, 0, 500_000))
    assert p.fire == (utc(2026, 1, 1),)
    assert p.next_run_at == utc(2026, 1, 1, 0, 0, 1)


# -- bad input, refused where it is written ---------------------------------------------------
@pytest.fixture
def app() -> Soniq:
    return Soniq("postgresql://localhost/unused")


def declare(app: Soniq, **options: Any) -> None:
    @app.periodic(**options)
    async def poll(region: str = "eu") -> None:
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cron": "61 * * * *"}, "the minute field '61'"),
        ({"cron": "0 25 * * *"}, "the hour field '25'"),
        ({"cron": "0 9 * * funday"}, "the day-of-week field 'funday'"),
        ({"cron": "0 9 32 * *"}, "the day-of-month field '32'"),
        ({"cron": "0 9 * *"}, "minute hour day-of-month month day-of-week"),
        ({"cron": "0 9 * * *", "timezone": "Europe/Berln"}, "did you mean 'Europe/Berlin'"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Base"}, "unknown time zone 'Mars/Base'"),
        ({"every": 0.5}, "under one second"),
        ({"every": timedelta(milliseconds=10)}, "use every=1 or more"),
        ({"every": "5m"}, "every must be a timedelta or a number of seconds"),
        ({"cron": "* * * * *", "every": 60}, "exactly one of cron"),
        ({}, "not neither"),
        ({"every": 60, "missed": "never"}, "'latest'"),
        ({"every": 60, "jitter": -1}, "jitter must be"),
        ({"every": 60, "timezone": "Europe/Berlin"}, "timezone applies to cron only"),
    ],
)
def test_bad_schedules_fail_at_the_decorator(
    app: Soniq, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        declare(app, **options)
    assert message in str(info.value)


def test_schedule_args_must_bind_to_the_job(app: Soniq) -> None:
    with pytest.raises(JobArgumentsError, match=r"schedule_args do not fit.*region"):
        declare(app, every=60, schedule_args={"regoin": "us"})
    with pytest.raises(JobArgumentsError, match="JSON"):
        declare(app, every=60, schedule_args={"region": object()})


async def test_scheduler_add_checks_before_touching_the_database(app: Soniq) -> None:
    @app.job()
    async def poll(region: str) -> None:
        pass

    # The URL points nowhere: each of these fails on its input, before any connection.
    with pytest.raises(JobArgumentsError, match="region"):
        await app.scheduler.add(poll, every=60)
    with pytest.raises(ConfigurationError, match="the hour field"):
        await app.scheduler.add(poll, cron="0 24 * * *", args={"region": "us"})
    with pytest.raises(JobArgumentsError, match="not a registered job"):
        await app.scheduler.add(lambda: None, every=60)


def test_a_periodic_job_is_also_a_job(app: Soniq) -> None:
    @app.periodic(every=30, queue="reports", max_retries=5, schedule_args={"day": "mon"})
    async def report(day: str) -> None:
        pass

    name = f"{report.__module__}.{report.__qualname__}"
    spec = app.registry.spec(name)
    assert spec.queue == "reports" and spec.max_retries == 5
    sched = app.scheduler.declared[name]
    assert sched.every == 30 and sched.args == {"day": "mon"} and sched.queue == "reports"
