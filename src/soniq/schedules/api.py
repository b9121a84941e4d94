"""``app.scheduler``: schedules kept in PostgreSQL, and the ones declared in code."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..middleware import EnqueueContext, PendingJob
from .spec import ScheduleSpec, make_schedule
from .store import ListedSchedule, ScheduleState, ScheduleStore

if TYPE_CHECKING:
    from ..app import Soniq


class ScheduleNotFound(ConfigurationError):
    """No schedule by that name."""


class Scheduler:
    """Schedules of one app. ``@app.periodic`` schedules are written by every worker as it
    starts; ``add`` writes one now, and it stays until ``remove``."""

    def __init__(self, app: Soniq) -> None:
        self._app = app
        #: Declared with ``@app.periodic``: name -> schedule.
        self.declared: dict[str, ScheduleSpec] = {}

    @property
    def _store(self) -> ScheduleStore:
        return ScheduleStore(self._app._store)

    def declare(self, spec: ScheduleSpec) -> None:
        existing = self.declared.get(spec.name)
        if existing is not None and existing != spec:
            raise ConfigurationError(
                f"two @app.periodic schedules are named {spec.name!r}; give one of them "
                f"another name with schedule_name=..."
            )
        self.declared[spec.name] = spec

    async def add(
        self,
        job: str | Callable[..., Any],
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        timezone: str | None = None,
        args: dict[str, Any] | None = None,
        name: str | None = None,
        missed: str = "latest",
        overlap: bool = True,
        jitter: float = 0.0,
    ) -> dict[str, Any]:
        """Create or replace schedule ``name`` (default: the job's name) for a registered job;
        it is kept in the database until removed. Returns it as ``get`` does."""
        spec = make_schedule(
            self._app._spec_of(job),
            name=name,
            cron=cron,
            every=every,
            timezone_name=timezone,
            args=args,
            missed=missed,
            overlap=overlap,
            jitter=jitter,
            source="api",
        )
        await self._store.upsert([spec], replace=True)
        return await self.get(spec.name)

    async def pause(self, name: str) -> None:
        """Stop firing until ``resume`` (a deploy's upsert keeps it paused)."""
        if not await self._store.pause(name):
            raise self._missing(name)

    async def resume(self, name: str) -> None:
        """Fire again from the next fire time after now."""
        if not await self._store.resume(name):
            raise self._missing(name)

    async def remove(self, name: str) -> None:
        """Delete the schedule. One declared with ``@app.periodic`` comes back when a worker
        with that code starts; remove the decorator first."""
        if not await self._store.remove(name):
            raise self._missing(name)

    async def trigger(self, name: str) -> str:
        """Run the schedule's job once now, outside its timetable; returns the job id.

        Through the enqueue chain when this app knows the job, else written from the stored
        schedule alone. ``ctx.fire_time`` is the trigger time."""
        from ..app import new_job_id

        stored = await self._store.get(name, self._app.settings.lease_seconds)
        if stored is None:
            raise self._missing(name)
        job_id = new_job_id()
        spec = self._app.registry.find(stored.job_name)
        if spec is None:
            written = await self._store.trigger_from_row(name, job_id)
            if written is None:
                raise self._missing(name)
            return written
        args_json = spec.bind(json.loads(stored.args))
        async with self._store.transaction() as conn:
            # The database's now, like every fire time (and what the testing clock moves).
            pending = PendingJob(
                job_id,
                spec,
                spec.queue,
                args_json,
                spec.priority,
                None,
                0.0,
                schedule=name,
                fire_time=await self._store.db_now(conn),
            )
            await self._app.middleware.enqueue_call(self._app.writer)(
                EnqueueContext([pending], batch=False, connection=conn)
            )
            await self._store.set_last_job(conn, name, job_id)
        return job_id

    async def get(self, name: str) -> dict[str, Any]:
        stored = await self._store.get(name, self._app.settings.lease_seconds)
        if stored is None:
            raise self._missing(name)
        return schedule_dict(stored)

    async def list(self) -> list[dict[str, Any]]:
        """Every schedule in the database, by name."""
        return [schedule_dict(r) for r in await self._store.list(self._app.settings.lease_seconds)]

    async def state(self) -> tuple[ScheduleState, ...]:
        """Each schedule's fire counts and last/next fire times (what the metrics report)."""
        return await self._store.state()

    @staticmethod
    def _missing(name: str) -> ScheduleNotFound:
        return ScheduleNotFound(
            f"no schedule named {name!r}; `soniq schedules list` shows the ones there are"
        )


def schedule_dict(stored: ListedSchedule) -> dict[str, Any]:
    """The public shape of a schedule (``get``, ``list``, ``soniq schedules list --json``)."""
    return {
        "name": stored.name,
        "job_name": stored.job_name,
        "cron": stored.cron,
        "every": stored.every_s,
        "timezone": stored.timezone,
        "args": json.loads(stored.args),
        "queue": stored.queue,
        "missed": stored.missed,
        "overlap": stored.overlap,
        "jitter": stored.jitter_s,
        "source": stored.source,
        "paused": stored.paused,
        "orphaned": stored.orphaned,
        "next_run_at": stored.next_run_at,
        "last_run_at": stored.last_run_at,
        "last_job_id": stored.last_job_id,
        "fired": stored.fired_total,
        "skipped_overlap": stored.skipped_total,
        "missed_fires": stored.missed_total,
    }
