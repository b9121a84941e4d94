"""The schedules' statements (:mod:`soniq.sql_schedules`), each run by one method here, which
returns typed values (:class:`StoredSchedule` and its two variants), never rows."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import asyncpg

from .. import sql_schedules
from ..db_errors import CONNECTION_ERRORS
from ..errors import SchemaError
from ..store import SETUP_HINT, Store
from .spec import Missed, ScheduleSpec
from .timing import next_fire

if TYPE_CHECKING:
    from ..middleware import Connection

_Stored = TypeVar("_Stored", bound="StoredSchedule")


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """One row of ``soniq_schedules`` as read back (``sql_schedules._SCHEDULE_COLUMNS``; built
    by column name, so a column the statement and this class disagree on fails at once), with
    the database's ``now()`` when it was read: fire times are measured on that clock."""

    name: str
    job_name: str
    cron: str | None
    every_s: float | None
    timezone: str
    args: str  # JSON text
    queue: str
    priority: int
    max_attempts: int
    missed: Missed
    overlap: bool
    jitter_s: float
    source: Literal["code", "api"]
    paused: bool
    next_run_at: datetime | None  # None while paused
    last_run_at: datetime | None
    last_job_id: str | None
    fired_total: int
    skipped_total: int
    missed_total: int
    created_at: datetime
    updated_at: datetime
    db_now: datetime

    @classmethod
    def of(cls: type[_Stored], row: asyncpg.Record) -> _Stored:
        return cls(**row)

    def to_spec(self) -> ScheduleSpec:
        """The schedule as declared (it was checked when it was written)."""
        return ScheduleSpec(
            name=self.name,
            job_name=self.job_name,
            cron=self.cron,
            every=self.every_s,
            timezone=self.timezone,
            args=json.loads(self.args),
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.max_attempts,
            missed=self.missed,
            overlap=self.overlap,
            jitter=self.jitter_s,
            source=self.source,
        )


@dataclass(frozen=True, slots=True)
class ListedSchedule(StoredSchedule):
    """A schedule as ``app.scheduler.list``/``get`` show it."""

    #: No live worker knows its job, so nothing fires it.
    orphaned: bool


@dataclass(frozen=True, slots=True)
class LockedSchedule(StoredSchedule):
    """A schedule row locked for a fire (or a resume), until its transaction ends."""

    #: Its previous job is still queued or running (what ``overlap=False`` skips on).
    busy: bool


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """One schedule's counts and fire times, for metrics (``app.scheduler.state()``)."""

    name: str
    fired: int
    skipped_overlap: int
    missed: int
    #: Unix times; next is None while paused.
    last_fire_time: float | None
    next_fire_time: float | None


class ScheduleStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection[asyncpg.Record]]:
        """One pooled connection in a transaction; connection errors become
        DatabaseUnavailable, a missing table a SchemaError naming the fix."""
        await self.store.check_schema()
        pool = await self.store.pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                yield conn  # type: ignore[misc]
        except CONNECTION_ERRORS as exc:
            raise self.store.unavailable(exc) from exc
        except asyncpg.UndefinedTableError as exc:
            raise SchemaError(f"The Soniq tables are missing; {SETUP_HINT}") from exc

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one of this module's statements on the pool (every method outside a fire)."""
        await self.store.check_schema()
        return await self.store.fetch(query, *args)

    # -- declaring ---------------------------------------------------------------------------
    async def upsert(self, specs: Sequence[ScheduleSpec], *, replace: bool) -> list[str]:
        """Write schedules; returns the names that changed. ``replace``: also restart the
        timetable of an unchanged one (``app.scheduler.add`` of an existing name)."""
        changed: list[str] = []
        async with self.transaction() as conn:
            now: datetime = await conn.fetchval(sql_schedules.DB_NOW)
            for spec in specs:
                hit = await conn.fetchval(
                    sql_schedules.UPSERT_SCHEDULE,
                    spec.name,
                    spec.job_name,
                    spec.cron,
                    spec.every,
                    spec.timezone,
                    spec.args_json,
                    spec.queue,
                    spec.priority,
                    spec.max_attempts,
                    spec.missed,
                    spec.overlap,
                    spec.jitter,
                    spec.source,
                    next_fire(spec, now),
                    replace,
                )
                if hit:
                    changed.append(spec.name)
                    await conn.execute(sql_schedules.NOTIFY_SCHEDULES, spec.name)
        return changed

    async def set_worker_job_names(self, worker_id: str, names: Sequence[str]) -> None:
        await self._fetch(sql_schedules.SET_WORKER_JOB_NAMES, worker_id, list(names))

    # -- reading -----------------------------------------------------------------------------
    async def worker_schedules(self, job_names: Sequence[str]) -> list[StoredSchedule]:
        """The schedules of the jobs a worker knows (what its runner sleeps on)."""
        rows = await self._fetch(sql_schedules.WORKER_SCHEDULES, list(job_names))
        return [StoredSchedule.of(row) for row in rows]

    async def list(self, lease_seconds: float) -> list[ListedSchedule]:
        rows = await self._fetch(sql_schedules.LIST_SCHEDULES, lease_seconds)
        return [ListedSchedule.of(row) for row in rows]

    async def get(self, name: str, lease_seconds: float) -> ListedSchedule | None:
        rows = await self._fetch(sql_schedules.GET_SCHEDULE, lease_seconds, name)
        return ListedSchedule.of(rows[0]) if rows else None

    # -- operations --------------------------------------------------------------------------
    async def pause(self, name: str) -> bool:
        async with self.transaction() as conn:
            hit = await conn.fetchval(sql_schedules.PAUSE_SCHEDULE, name)
            if hit:
                await conn.execute(sql_schedules.NOTIFY_SCHEDULES, name)
        return bool(hit)

    async def resume(self, name: str) -> bool:
        """Fire again from the next fire time after now (none of those passed while paused)."""
        async with self.transaction() as conn:
            locked = await self.lock(conn, name)
            if locked is None:
                return False
            await conn.execute(
                sql_schedules.RESUME_SCHEDULE, name, next_fire(locked.to_spec(), locked.db_now)
            )
            await conn.execute(sql_schedules.NOTIFY_SCHEDULES, name)
        return True

    async def remove(self, name: str) -> bool:
        async with self.transaction() as conn:
            hit = await conn.fetchval(sql_schedules.REMOVE_SCHEDULE, name)
            if hit:
                await conn.execute(sql_schedules.NOTIFY_SCHEDULES, name)
        return bool(hit)

    async def trigger_from_row(self, name: str, job_id: str) -> str | None:
        """One job now from the stored schedule alone (no app code needed)."""
        rows = await self._fetch(sql_schedules.TRIGGER_FROM_ROW, name, job_id)
        job: str | None = rows[0][0] if rows else None
        return job

    async def state(self) -> tuple[ScheduleState, ...]:
        rows = await self._fetch(sql_schedules.SCHEDULE_METRICS)
        return tuple(ScheduleState(*row) for row in rows)

    # -- firing (inside ``transaction()``) ---------------------------------------------------
    @staticmethod
    async def lock(conn: Connection, name: str) -> LockedSchedule | None:
        """Lock the schedule's row for this transaction (None: no such schedule)."""
        row = await conn.fetchrow(sql_schedules.LOCK_SCHEDULE, name)
        return None if row is None else LockedSchedule.of(row)

    @staticmethod
    async def insert_fire(
        conn: Connection,
        name: str,
        fire_time: datetime,
        job_id: str | None,
        result: str,
        worker_id: str,
    ) -> bool:
        return bool(
            await conn.fetchval(
                sql_schedules.INSERT_FIRE, name, fire_time, job_id, result, worker_id
            )
        )

    @staticmethod
    async def advance(
        conn: Connection,
        name: str,
        *,
        next_run_at: datetime,
        last_run_at: datetime | None,
        last_job_id: str | None,
        fired: int,
        skipped: int,
        missed: int,
    ) -> None:
        await conn.execute(
            sql_schedules.ADVANCE_SCHEDULE,
            name,
            next_run_at,
            last_run_at,
            last_job_id,
            fired,
            skipped,
            missed,
        )
        if last_run_at is not None:
            await conn.execute(sql_schedules.PURGE_FIRES, name, last_run_at)

    @staticmethod
    async def db_now(conn: Connection) -> datetime:
        now: datetime = await conn.fetchval(sql_schedules.DB_NOW)
        return now

    @staticmethod
    async def set_last_job(conn: Connection, name: str, job_id: str) -> None:
        await conn.execute(sql_schedules.SET_LAST_JOB, name, job_id)
