"""The statements of job control (:mod:`soniq.sql_control`), run for :class:`Store`.

Reached as ``store.control``; kept apart so the store's hot paths (enqueue, claim) stay as
they were and this module holds what unique jobs, snoozes, cancels and queue controls need.
Unique jobs follow :mod:`soniq.unique_settle`, driven here on asyncpg or an async caller's
connection (``enqueue_sync`` drives it in :mod:`soniq.sync_store`).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from . import sql, sql_control
from .connections import adapter_for, refused_data, wrong_side
from .control import CancelResult, QueueControl
from .db_errors import CONNECTION_ERRORS
from .insert_sql import unstorable
from .jobs import ClaimedJob
from .unique_settle import Rows, drive_async, fold_batch, settle, take_ids

if TYPE_CHECKING:
    from .jobs import PendingJob
    from .store import Store

_NO_SNOOZE_LIMIT = 2**31 - 1


class ControlStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- unique jobs -----------------------------------------------------------------------
    async def insert_unique(self, jobs: Sequence[PendingJob], conn: Any) -> None:
        """Write unique jobs; each deduplicated one gets the existing id (``deduplicated``).

        Duplicates within the batch are settled first; the rest is decided by the database
        (:mod:`soniq.unique_settle`), in one transaction (a savepoint inside the caller's, on
        ``conn`` of any async driver), so ``raise`` writes nothing at all.
        """
        store = self._store
        firsts, followers = fold_batch(jobs)
        try:
            if conn is None:
                if not store.schema_checked:
                    await store.check_schema()
                pool = await store.pool()
                async with pool.acquire() as own, own.transaction():
                    await drive_async(settle(firsts), functools.partial(_fetch, own))
            else:
                adapter = adapter_for(conn)
                if not adapter.is_async:
                    raise wrong_side(adapter, sync_call=False)
                if not store.schema_checked:
                    query = store.qualify(sql.CURRENT_VERSION)
                    store.judge_version(await adapter.fetchval(conn, query, ()))

                def run(query: str, args: tuple[Any, ...]) -> Awaitable[Rows]:
                    return adapter.fetch(conn, store.qualify(query), args)  # type: ignore[no-any-return]

                async with adapter.savepoint(conn):
                    await drive_async(settle(firsts), run)
        except Exception as exc:
            if refused_data(exc):
                raise unstorable(jobs, exc) from None
            if conn is None and isinstance(exc, CONNECTION_ERRORS):
                raise store.unavailable(exc) from exc
            raise  # a caller's connection: theirs to handle
        take_ids(followers)

    # -- cancel and snooze -----------------------------------------------------------------
    async def cancel_job(self, job_id: str) -> CancelResult:
        rows = await self._store.fetch(sql_control.CANCEL_JOB, job_id)
        if not rows:
            return CancelResult.NOT_FOUND
        status = rows[0]["status"]
        if status == "queued" and rows[0]["changed"]:
            return CancelResult.CANCELLED
        if status == "processing":
            return CancelResult.CANCEL_REQUESTED
        return CancelResult.ALREADY_FINISHED

    async def cancel_requested(self, worker_id: str, conn: Any = None) -> list[str]:
        """Running jobs of ``worker_id`` asked to stop; on ``conn`` (the heartbeat's own) when
        given, so a busy pool never delays a beat."""
        if conn is None:
            rows = await self._store.fetch(sql_control.CANCEL_REQUESTED, worker_id)
        else:
            rows = await conn.fetch(
                sql_control.CANCEL_REQUESTED, worker_id, timeout=self._store.command_timeout
            )
        return [r[0] for r in rows]

    async def snooze(
        self,
        job_id: str,
        worker_id: str,
        *,
        seconds: float,
        max_snoozes: int | None,
        attempt: int,
        reason: str | None,
    ) -> str | None:
        """Put a running job back snoozed; its new status, or None if it is no longer ours."""
        rows = await self._store.fetch(
            sql_control.SNOOZE_JOB,
            job_id,
            worker_id,
            seconds,
            _NO_SNOOZE_LIMIT if max_snoozes is None else max_snoozes,
            attempt,
            reason,
        )
        return rows[0]["status"] if rows else None

    # -- queues ----------------------------------------------------------------------------
    async def queue_controls(self) -> list[QueueControl]:
        """Queues with a control in force (what workers keep in view)."""
        return [_control(r) for r in await self._store.fetch(sql_control.QUEUE_CONTROLS)]

    async def list_queues(self) -> list[QueueControl]:
        return [_control(r) for r in await self._store.fetch(sql_control.LIST_QUEUES)]

    async def set_queue(
        self,
        name: str,
        *,
        paused: bool | None = None,
        concurrency: int | None = None,
        set_concurrency: bool = False,
        rate: float | None = None,
        set_rate: bool = False,
    ) -> QueueControl:
        rows = await self._store.fetch(
            sql_control.SET_QUEUE_CONTROL,
            name,
            paused,
            concurrency,
            rate,
            paused is not None,
            set_concurrency,
            set_rate,
        )
        return _control(rows[0])

    async def claim_limited(
        self, worker_id: str, queue: str, names: list[str], want: int, finished: list[str]
    ) -> list[ClaimedJob]:
        """Claim up to ``want`` jobs of a limited queue, under the queue's advisory lock;
        ``finished``: the worker's jobs that ended but are not written yet (their slots are
        free). On the claim pool, planned as the round trip's claim is (no bitmap scans)."""
        pool = await self._store.claim_pool()
        try:
            rows: list[ClaimedJob] = await pool.fetch(
                sql_control.CLAIM_LIMITED,
                worker_id,
                queue,
                names,
                want,
                finished,
                timeout=self._store.command_timeout,
                record_class=ClaimedJob,
            )
        except CONNECTION_ERRORS as exc:
            raise self._store.unavailable(exc) from exc
        return rows


async def _fetch(conn: Any, query: str, args: tuple[Any, ...]) -> Rows:
    rows: Rows = await conn.fetch(query, *args)
    return rows


def _control(row: asyncpg.Record) -> QueueControl:
    return QueueControl(
        name=row["name"],
        paused=row["paused"],
        concurrency=row["concurrency"],
        rate=row["rate"],
        updated_at=row.get("updated_at"),
    )
