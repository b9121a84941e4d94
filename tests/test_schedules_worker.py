"""Schedules fired by in-process workers against the real database: timeliness, persistence,
missed fires, overlap, orphans, code upserts, the job context and the enqueue chain."""

from __future__ import annotations

import asyncio
import statistics
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from soniq import JobContext, Soniq
from soniq.schedules import ScheduleNotFound
from tests.support.waiting import running_worker, wait_until


def make_app(url: str) -> Soniq:
    return Soniq(url, poll_interval=0.5, lease_seconds=3, grace_period=5)


async def jobs_of(db: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id::text AS id, fire_time, status, schedule_name, args::text AS args "
        "FROM soniq_jobs WHERE schedule_name = $1 ORDER BY fire_time",
        name,
    )


async def test_every_second_fires_on_time_with_its_context(clean_db: str) -> None:
    app = make_app(clean_db)
    seen: list[tuple[str | None, datetime | None, float]] = []

    @app.periodic(every=1, schedule_args={"region": "eu"})
    async def poll(region: str, ctx: JobContext) -> None:
        assert region == "eu"
        seen.append((ctx.schedule, ctx.fire_time, time.time()))

    @app.job()
    async def plain(ctx: JobContext) -> None:
        seen.append((ctx.schedule, ctx.fire_time, 0.0))

    async with running_worker(app, concurrency=4):
        await app.enqueue(plain)
        await wait_until(lambda: len(seen) >= 8, timeout=20, what="8 fires")
    await app.close()
    plain_runs = [s for s in seen if s[2] == 0.0]
    assert plain_runs == [(None, None, 0.0)]
    fires = [s for s in seen if s[2] != 0.0]
    assert {s[0] for s in fires} == {f"{poll.__module__}.{poll.__qualname__}"}
    times = [s[1] for s in fires]
    assert all(t is not None and t.microsecond == 0 for t in times)
    assert len(set(times)) == len(times), "one job per fire time"
    # Start delay: job start (wall clock) minus its fire time.
    delays = [s[2] - s[1].timestamp() for s in fires if s[1] is not None]
    print(f"fire-to-start delays: {sorted(round(d, 3) for d in delays)}")
    assert statistics.median(delays) < 0.5
    assert max(delays) < 1.0


async def test_an_idle_runner_sleeps_until_the_next_fire_without_reading_the_table(
    clean_db: str,
) -> None:
    app = make_app(clean_db)

    @app.periodic(cron="0 0 29 2 *", schedule_name="leap-day")  # far off, whenever this runs
    async def leap_day() -> None:
        pass

    async with running_worker(app) as worker:
        runner = worker.schedules
        assert runner is not None
        await wait_until(lambda: runner.next_due_in, what="the runner to load the schedule")
        due_in = runner.next_due_in
        assert due_in is not None and due_in > 86400
        calls: list[str] = []
        store = runner.store
        read, transaction = store.worker_schedules, store.transaction
        store.worker_schedules = lambda *a: (calls.append("read"), read(*a))[1]  # type: ignore[method-assign]
        store.transaction = lambda: (calls.append("tx"), transaction())[1]  # type: ignore[method-assign]
        await asyncio.sleep(3)  # nothing to wait for: the point is that nothing is read
        # At most one read: the worker's own start-up declaration NOTIFYs every runner, and that
        # may land after the load above (it did on a loaded CI machine), making one reload.
        # Polling the table, even once a second, would read three times or more.
        assert calls in ([], ["read"]), calls
    await app.close()


async def test_scheduler_api_persists_until_removed(clean_db: str, db: asyncpg.Connection) -> None:
    app = make_app(clean_db)

    @app.job()
    async def poll(region: str) -> None:
        pass

    added = await app.scheduler.add(poll, every=60, args={"region": "us"}, name="poll-us")
    assert added["name"] == "poll-us"
    assert added["job_name"] == f"{poll.__module__}.{poll.__qualname__}"
    assert added["every"] == 60 and added["cron"] is None and added["timezone"] == "UTC"
    assert added["args"] == {"region": "us"} and added["paused"] is False
    assert added["next_run_at"] is not None and added["next_run_at"].second == 0
    assert added["last_run_at"] is None and added["last_job_id"] is None
    assert added["orphaned"] is True  # no worker runs yet

    # Another app on the same database sees it: it lives in PostgreSQL.
    other = make_app(clean_db)
    listed = await other.scheduler.list()
    assert [s["name"] for s in listed] == ["poll-us"]

    await app.scheduler.pause("poll-us")
    paused = await app.scheduler.get("poll-us")
    assert paused["paused"] is True and paused["next_run_at"] is None
    await app.scheduler.resume("poll-us")
    resumed = await app.scheduler.get("poll-us")
    assert resumed["paused"] is False and resumed["next_run_at"] is not None

    job_id = await app.scheduler.trigger("poll-us")
    job = await app.get_job(job_id)
    assert job is not None and job["args"] == {"region": "us"}
    assert (await app.scheduler.get("poll-us"))["last_job_id"] == job_id
    # Triggered from an app that does not know the job (like the CLI): written from the row.
    other_id = await other.scheduler.trigger("poll-us")
    assert (await other.get_job(other_id))["args"] == {"region": "us"}  # type: ignore[index]

    await app.scheduler.remove("poll-us")
    assert await other.scheduler.list() == []
    with pytest.raises(ScheduleNotFound, match="soniq schedules list"):
        await app.scheduler.get("poll-us")
    await app.close()
    await other.close()


async def test_code_schedules_are_upserted_and_a_changed_cron_takes_effect(
    clean_db: str,
) -> None:
    app = make_app(clean_db)

    @app.periodic(cron="30 9 * * mon-fri", timezone="Europe/Berlin")
    async def daily_report() -> None:
        pass

    (name,) = app.scheduler.declared
    async with running_worker(app) as worker:
        await wait_until(lambda: worker.schedules is not None and worker.schedules.next_due_in)
        got = await app.scheduler.get(name)
    assert got["cron"] == "30 9 * * mon-fri" and got["timezone"] == "Europe/Berlin"
    assert got["source"] == "code"
    berlin = got["next_run_at"].astimezone(ZoneInfo("Europe/Berlin"))
    assert (berlin.hour, berlin.minute) == (9, 30) and berlin.weekday() < 5
    await app.close()

    # The next deploy changes the cron: its worker's start rewrites the schedule.
    app2 = make_app(clean_db)

    @app2.periodic(cron="0 18 * * *", timezone="America/New_York", name=name)
    async def daily_report_v2() -> None:
        pass

    async with running_worker(app2) as worker:
        await wait_until(lambda: worker.schedules is not None and worker.schedules.next_due_in)
        got2 = await app2.scheduler.get(name)
    ny = got2["next_run_at"].astimezone(ZoneInfo("America/New_York"))
    assert got2["cron"] == "0 18 * * *" and (ny.hour, ny.minute) == (18, 0)
    await app2.close()


async def _due_in(db: asyncpg.Connection, name: str, seconds: float) -> None:
    await db.execute(
        "UPDATE soniq_schedules SET next_run_at = now() + make_interval(secs => $2) "
        "WHERE name = $1",
        name,
        seconds,
    )


@pytest.mark.parametrize(
    ("missed", "expected_jobs", "expected_missed"),
    [("latest", 1, 2), ("skip", 0, 3), ("all", 3, 0)],
)
async def test_missed_fires_after_all_workers_were_down(
    clean_db: str, db: asyncpg.Connection, missed: str, expected_jobs: int, expected_missed: int
) -> None:
    app = make_app(clean_db)

    @app.job()
    async def hourly() -> None:
        pass

    # Hourly at a minute two minutes back, so the latest fire time is 2-3 minutes late.
    now: datetime = await db.fetchval("SELECT now()")
    minute = (now.minute - 2) % 60
    await app.scheduler.add(hourly, cron=f"{minute} * * * *", name="hourly", missed=missed)
    latest = (now - timedelta(minutes=2)).replace(second=0, microsecond=0)
    # As if the workers had been down for three fire times: 2 h, 1 h and 0 h before latest.
    await db.execute(
        "UPDATE soniq_schedules SET next_run_at = $1::timestamptz - interval '2 hours'",
        latest,
    )
    async with running_worker(app) as worker:

        async def settled() -> bool:
            row = await db.fetchrow("SELECT next_run_at FROM soniq_schedules")
            return bool(row["next_run_at"] > latest)

        await wait_until(settled, timeout=10, what="the schedule to catch up")
        assert worker.schedules is not None
    rows = await jobs_of(db, "hourly")
    assert len(rows) == expected_jobs
    if missed == "latest":
        assert rows[0]["fire_time"] == latest
    if missed == "all":
        assert [r["fire_time"] for r in rows] == [latest - timedelta(hours=h) for h in (2, 1, 0)]
    got = await app.scheduler.get("hourly")
    assert got["missed_fires"] == expected_missed
    assert got["fired"] == expected_jobs
    await app.close()


async def test_overlap_false_skips_while_the_previous_job_runs(
    clean_db: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(clean_db)
    release = asyncio.Event()
    started: list[datetime | None] = []

    @app.periodic(every=1, overlap=False, schedule_name="slow")
    async def slow(ctx: JobContext) -> None:
        started.append(ctx.fire_time)
        await release.wait()

    caplog.set_level("INFO", logger="soniq")
    async with running_worker(app, concurrency=4):
        await wait_until(lambda: started, timeout=10, what="the first fire")

        async def skipped_twice() -> bool:
            row = await db.fetchrow("SELECT skipped_total FROM soniq_schedules")
            return bool(row["skipped_total"] >= 2)

        await wait_until(skipped_twice, timeout=10, what="two skipped fires")
        assert len(started) == 1
        release.set()
        await wait_until(lambda: len(started) >= 2, timeout=10, what="a fire after the job ended")
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "schedule.skipped" in events and "schedule.fired" in events
    fires = await db.fetch(
        "SELECT result, count(*) FROM soniq_schedule_fires GROUP BY result ORDER BY result"
    )
    counts = {r["result"]: r["count"] for r in fires}
    assert counts["skipped_overlap"] >= 2 and counts["fired"] >= 2
    await app.close()


async def test_a_schedule_no_live_worker_knows_is_orphaned_and_not_fired(
    clean_db: str, db: asyncpg.Connection
) -> None:
    app = make_app(clean_db)

    @app.job(name="reports.gone")
    async def gone() -> None:
        pass

    await app.scheduler.add(gone, every=1, name="gone-every-second")
    worker_app = make_app(clean_db)

    @worker_app.job(name="other")
    async def other() -> None:
        pass

    async with running_worker(worker_app) as worker:
        await wait_until(lambda: worker.schedules is not None, what="runner")
        await wait_until(
            lambda: db.fetchval("SELECT count(*) FROM soniq_workers WHERE job_names IS NOT NULL"),
            what="the worker to list its jobs",
        )
        listed = {s["name"]: s for s in await app.scheduler.list()}
        assert listed["gone-every-second"]["orphaned"] is True
        # Past at least two fire times, nothing was written for it.
        await asyncio.sleep(2.5)  # nothing to wait for: the point is that nothing happens
        assert await jobs_of(db, "gone-every-second") == []
    # A worker that knows the job: no longer orphaned, and it fires.
    async with running_worker(app) as worker:
        await wait_until(lambda: jobs_of(db, "gone-every-second"), timeout=10, what="a fire")
        listed = {s["name"]: s for s in await app.scheduler.list()}
        assert listed["gone-every-second"]["orphaned"] is False
    await app.close()
    await worker_app.close()


async def test_pause_and_remove_reach_running_workers_by_notify(
    clean_db: str, db: asyncpg.Connection
) -> None:
    app = make_app(clean_db)

    @app.job()
    async def tick() -> None:
        pass

    await app.scheduler.add(tick, every=3600, name="tick")
    async with running_worker(app) as worker:
        runner = worker.schedules
        assert runner is not None
        await wait_until(lambda: "tick" in runner._due, what="the runner to load it")
        # Due in half a second: the runner is told (NOTIFY via the upsert) and fires on time.
        await app.scheduler.add(tick, every=1, name="tick")
        await wait_until(lambda: jobs_of(db, "tick"), timeout=5, what="a fire after add")
        await app.scheduler.pause("tick")
        await wait_until(lambda: "tick" not in runner._due, timeout=5, what="pause to arrive")
        count = len(await jobs_of(db, "tick"))
        await asyncio.sleep(1.5)  # nothing to wait for: a paused schedule writes nothing
        assert len(await jobs_of(db, "tick")) == count
        await app.scheduler.resume("tick")
        await wait_until(lambda: "tick" in runner._due, timeout=5, what="resume to arrive")
        await app.scheduler.remove("tick")
        await wait_until(lambda: "tick" not in runner._due, timeout=5, what="remove to arrive")
    await app.close()


async def test_send_span_carries_the_schedule(clean_db: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    from soniq_otel import OtelConfig

    app = make_app(clean_db)
    app.instrument(otel=OtelConfig(tracer_provider=provider))

    @app.periodic(every=1, schedule_name="traced")
    async def traced() -> None:
        pass

    async with running_worker(app):

        def sends() -> list[Any]:
            return [s for s in exporter.get_finished_spans() if s.name.startswith("send ")]

        await wait_until(sends, timeout=10, what="a send span")
    span = sends()[0]
    attrs = dict(span.attributes or {})
    assert attrs["soniq.schedule.name"] == "traced"
    assert datetime.fromisoformat(str(attrs["soniq.schedule.fire_time"])).microsecond == 0
    await app.close()


async def test_fires_and_fire_times_are_exported_by_the_reporting_process(clean_db: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from soniq_prom import metrics_of, render_async

    app = make_app(clean_db)
    app.instrument(prometheus=True)
    release = asyncio.Event()

    @app.periodic(every=1, overlap=False, schedule_name="metered")
    async def metered() -> None:
        await release.wait()

    def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("soniq_schedule")
        }

    async with running_worker(app, concurrency=2):

        async def skipped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            layer = metrics_of(app)
            assert layer is not None and layer.queue_state is not None
            layer.queue_state._checked_at = float("-inf")  # no cache: read again now
            got = samples((await render_async(app)).body.decode())
            key = (
                "soniq_schedule_fires_total",
                (("result", "skipped_overlap"), ("schedule", "metered")),
            )
            return got if got.get(key, 0) >= 1 else None

        got = await wait_until(skipped, timeout=10, what="a skipped fire in the metrics")
        release.set()
    fired = got[("soniq_schedule_fires_total", (("result", "fired"), ("schedule", "metered")))]
    assert fired == 1
    missed = got[("soniq_schedule_fires_total", (("result", "missed"), ("schedule", "metered")))]
    assert missed == 0
    last = got[("soniq_schedule_last_fire_timestamp_seconds", (("schedule", "metered"),))]
    nxt = got[("soniq_schedule_next_fire_timestamp_seconds", (("schedule", "metered"),))]
    assert nxt - last >= 1 and abs(nxt - time.time()) < 3
    await app.close()


async def test_jitter_delays_the_job_not_the_fire_time(
    clean_db: str, db: asyncpg.Connection
) -> None:
    app = make_app(clean_db)

    @app.periodic(every=1, jitter=30, schedule_name="jittery")
    async def jittery() -> None:
        pass

    async with running_worker(app):

        async def three() -> list[asyncpg.Record]:
            rows = await db.fetch(
                "SELECT fire_time, extract(epoch FROM scheduled_at - created_at) AS delay "
                "FROM soniq_jobs WHERE schedule_name = 'jittery'"
            )
            return rows if len(rows) >= 3 else []

        rows = await wait_until(three, timeout=10, what="three fires")
    assert all(r["fire_time"].microsecond == 0 for r in rows)  # keys stay on the timetable
    delays = [float(r["delay"]) for r in rows]
    assert all(0 <= d <= 30 for d in delays) and len(set(delays)) == len(delays), delays
    await app.close()


async def test_shifting_stored_times_back_moves_running_schedules(
    clean_db: str, db: asyncpg.Connection
) -> None:
    # soniq.testing.Clock.advance moves Soniq's stored times back by the advance, schedules'
    # included: an hourly schedule whose next fire was up to an hour away is due at once.
    from soniq.testing import Clock

    app = make_app(clean_db)

    @app.periodic(every=3600, schedule_name="hourly", missed="all")
    async def hourly() -> None:
        pass

    async with running_worker(app) as worker:
        runner = worker.schedules
        assert runner is not None
        await wait_until(lambda: runner.next_due_in, what="the runner to load it")
        before = (await app.scheduler.get("hourly"))["next_run_at"]
        away = (before - await db.fetchval("SELECT now()")).total_seconds()
        with Clock(app) as test_clock:
            await test_clock.advance(away + 0.2)
        rows = await wait_until(lambda: jobs_of(db, "hourly"), timeout=5, what="the fire")
        after = await app.scheduler.get("hourly")
    assert len(rows) == 1  # once, though the shift moved the timetable off its grid
    assert after["next_run_at"] == before and after["fired"] == 1 and after["missed_fires"] == 0
    await app.close()


async def test_a_fire_that_fails_writes_nothing_and_the_others_go_on(
    clean_db: str, db: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    from soniq import EnqueueContext, EnqueueNext, Middleware

    class RefuseA(Middleware):
        async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
            if ctx.jobs[0].schedule == "a":
                raise RuntimeError("quota exceeded")
            await call_next(ctx)

    app = make_app(clean_db)
    app.middleware.add(RefuseA)

    @app.periodic(every=1, schedule_name="a")
    async def job_a() -> None:
        pass

    @app.periodic(every=1, schedule_name="b")
    async def job_b() -> None:
        pass

    caplog.set_level("INFO", logger="soniq")
    async with running_worker(app):
        await wait_until(
            lambda: len([r for r in caplog.records if getattr(r, "event", "") == "schedule.error"]),
            timeout=10,
            what="the refused fire to be logged",
        )
        await wait_until(lambda: jobs_of(db, "b"), timeout=10, what="b to fire")
    assert await jobs_of(db, "a") == []
    # The refused fire's key was rolled back with it: the fire time can still be fired.
    assert (
        await db.fetchval("SELECT count(*) FROM soniq_schedule_fires WHERE schedule_name = 'a'")
        == 0
    )
    error = next(r for r in caplog.records if getattr(r, "event", "") == "schedule.error")
    assert "quota exceeded" in error.getMessage() and error.levelname == "ERROR"
    await app.close()
