"""The schedules' statements (``sql`` section "Schedules"), each run by one method here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from .. import sql_schedules
from ..db_errors import CONNECTION_ERRORS
from ..errors import SchemaError
from ..store import SETUP_HINT, Store
from .spec import ScheduleSpec
from .timing import next_fire

if TYPE_CHECKING:
    from ..middleware import Connection

Row = asyncpg.Record


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
    async def transaction(self) -> AsyncIterator[asyncpg.Connection[Row]]:
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

    async def fetch(self, query: str, *args: Any) -> list[Row]:
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
        await self.fetch(sql_schedules.SET_WORKER_JOB_NAMES, worker_id, list(names))

    # -- reading -----------------------------------------------------------------------------
    async def worker_schedules(self, job_names: Sequence[str]) -> list[Row]:
        return await self.fetch(sql_schedules.WORKER_SCHEDULES, list(job_names))

    async def list(self, lease_seconds: float) -> list[Row]:
        return await self.fetch(sql_schedules.LIST_SCHEDULES, lease_seconds)

    async def get(self, name: str, lease_seconds: float) -> Row | None:
        rows = await self.fetch(sql_schedules.GET_SCHEDULE, lease_seconds, name)
        return rows[0] if rows else None

    # -- operations --------------------------------------------------------------------------
    async def pause(self, name: str) -> bool:
        async with self.transaction() as conn:
            hit = await conn.fetchval(sql_schedules.PAUSE_SCHEDULE, name)
            if hit:
                await conn.execute(sql_schedules.NOTIFY_SCHEDULES, name)
        return bool(hit)

    async def resume(self, name: str) -> bool:
        """Fire again from the next fire time after now (none of those passed while paused)."""
        from .spec import spec_from_row

        async with self.transaction() as conn:
            row = await conn.fetchrow(sql_schedules.LOCK_SCHEDULE, name)
            if row is None:
                return False
            await conn.execute(
                sql_schedules.RESUME_SCHEDULE, name, next_fire(spec_from_row(row), row["db_now"])
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
        rows = await self.fetch(sql_schedules.TRIGGER_FROM_ROW, name, job_id)
        return rows[0][0] if rows else None

    async def state(self) -> tuple[ScheduleState, ...]:
        rows = await self.fetch(sql_schedules.SCHEDULE_METRICS)
        return tuple(ScheduleState(*row) for row in rows)

    # -- firing (inside ``transaction()``) ---------------------------------------------------
    @staticmethod
    async def lock(conn: Connection, name: str) -> Row | None:
        return await conn.fetchrow(sql_schedules.LOCK_SCHEDULE, name)

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
