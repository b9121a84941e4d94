"""The statements of job control (``sql`` "Job control" section), run for :class:`Store`.

Reached as ``store.control``; kept apart so the store's hot paths (enqueue, claim) stay as
they were and this module holds what unique jobs, snoozes, cancels and queue controls need.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncpg

from . import sql_control
from .control import CancelResult, QueueControl
from .db_errors import BAD_DATA_ERRORS, CONNECTION_ERRORS
from .errors import DuplicateJob, JobArgumentsError, SoniqError
from .jobs import ClaimedJob

if TYPE_CHECKING:
    from .jobs import PendingJob
    from .middleware import Connection
    from .store import Store

# Rounds of insert / read holders / clear stale before giving up: each round settles every job
# whose holder it saw, so more than two or three means holders keep changing under us.
_UNIQUE_ROUNDS = 20
_NO_SNOOZE_LIMIT = 2**31 - 1


class ControlStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- unique jobs -----------------------------------------------------------------------
    async def insert_unique(self, jobs: Sequence[PendingJob], conn: Connection | None) -> None:
        """Write unique jobs; each deduplicated one gets the existing id (``deduplicated``).

        Duplicates within the batch are settled here first (the first one is written, with the
        last one's arguments under ``replace``); the rest is decided by the database, in one
        transaction (a savepoint inside the caller's), so ``raise`` writes nothing at all.
        """
        store = self._store
        if not store._schema_checked:
            await store.check_schema(conn)
        first: dict[str, PendingJob] = {}
        followers: list[tuple[PendingJob, PendingJob]] = []
        for job in jobs:
            assert job.unique is not None
            prior = first.get(job.unique.key)
            if prior is None:
                first[job.unique.key] = job
                continue
            conflict = job.unique.rule.on_conflict
            if conflict == "raise":
                raise DuplicateJob(
                    f"Job {job.job_name!r}: the batch holds the same unique key twice "
                    f"({job.unique.key!r}); nothing was written",
                    prior.id,
                )
            if conflict == "replace":
                prior.args_json = job.args_json
                prior.scheduled_at, prior.delay_s = job.scheduled_at, job.delay_s
                job.replaced = True
            job.deduplicated = True
            followers.append((job, prior))
        try:
            if conn is not None:
                async with conn.transaction():
                    await self._settle_unique(conn, list(first.values()))
            else:
                pool = await store.pool()
                async with pool.acquire() as own, own.transaction():
                    await self._settle_unique(own, list(first.values()))
        except BAD_DATA_ERRORS as exc:
            names = ", ".join(sorted({repr(j.spec.name) for j in jobs}))
            raise JobArgumentsError(
                f"Job {names} cannot be stored: {exc}. Strings may not contain NUL characters "
                f"(\\x00) or unpaired surrogates, and priority is a 32-bit integer"
            ) from None
        except CONNECTION_ERRORS as exc:
            if conn is not None:
                raise
            raise store.unavailable(exc) from exc
        for job, prior in followers:
            job.id = prior.id

    async def _settle_unique(self, conn: Any, jobs: list[PendingJob]) -> None:
        pending = jobs
        for _ in range(_UNIQUE_ROUNDS):
            rows = await conn.fetch(sql_control.INSERT_UNIQUE_JOBS, *_unique_arrays(pending))
            written = {r[0] for r in rows}
            left = [j for j in pending if j.id not in written]
            if not left:
                return
            keys = [_key(j) for j in left]
            holders = {
                r["unique_key"]: r for r in await conn.fetch(sql_control.UNIQUE_HOLDERS, keys)
            }
            again: list[PendingJob] = []
            stale: list[str] = []
            replace: list[PendingJob] = []
            for job in left:
                holder = holders.get(_key(job))
                if holder is None:  # gone, or committed after this statement's snapshot
                    again.append(job)
                elif holder["stale"]:
                    stale.append(_key(job))
                    again.append(job)
                elif _rule(job).on_conflict == "raise":
                    raise DuplicateJob(
                        f"Job {job.job_name!r} is already {holder['status']} as {holder['id']} "
                        f"(unique key {_key(job)!r}); nothing was written",
                        holder["id"],
                    )
                elif _rule(job).on_conflict == "replace" and holder["status"] == "queued":
                    replace.append(job)
                else:
                    job.id, job.deduplicated = holder["id"], True
            if stale:
                await conn.execute(sql_control.UNIQUE_CLEAR_STALE, stale)
            if replace:
                done = {
                    r[0]: r[1]
                    for r in await conn.fetch(
                        sql_control.UNIQUE_REPLACE,
                        [_key(j) for j in replace],
                        [j.args_json for j in replace],
                        [j.scheduled_at for j in replace],
                        [j.delay_s for j in replace],
                        [_rule(j).within_s for j in replace],
                        ",".join(sorted({j.queue for j in replace})),
                    )
                }
                for job in replace:
                    if _key(job) in done:
                        job.id, job.deduplicated, job.replaced = done[_key(job)], True, True
                    else:
                        again.append(job)  # claimed meanwhile: look again
            if not again:
                return
            pending = again
        raise SoniqError(
            f"Could not settle {len(pending)} unique job(s) after {_UNIQUE_ROUNDS} tries: their "
            f"existing jobs kept changing state; try the enqueue again"
        )

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


def _key(job: PendingJob) -> str:
    assert job.unique is not None
    return job.unique.key


def _rule(job: PendingJob) -> Any:
    assert job.unique is not None
    return job.unique.rule


def _unique_arrays(jobs: Sequence[PendingJob]) -> tuple[list[Any], ...]:
    return (
        [j.id for j in jobs],
        [j.spec.name for j in jobs],
        [j.queue for j in jobs],
        [j.args_json for j in jobs],
        [j.priority for j in jobs],
        [j.spec.max_attempts for j in jobs],
        [j.scheduled_at for j in jobs],
        [j.delay_s for j in jobs],
        [json.dumps(j.trace_context) if j.trace_context else None for j in jobs],
        [_key(j) for j in jobs],
        [_rule(j).states_literal for j in jobs],
        [_rule(j).within_s for j in jobs],
    )


def _control(row: asyncpg.Record) -> QueueControl:
    return QueueControl(
        name=row["name"],
        paused=row["paused"],
        concurrency=row["concurrency"],
        rate=row["rate"],
        updated_at=row.get("updated_at"),
    )
