"""The store's half for managing jobs: one method per statement of :mod:`soniq.sql_manage`,
each returning typed or plain values (dicts shaped like ``get_job``'s, counts, JobEnding)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import sql_manage as sql
from .job_filters import STATUSES, JobFilter
from .jobs import JobEnding, JobInfo, JobStatus
from .store import Store, job_row_to_dict, parse_errors

# Rows one bulk statement changes: each is its own short transaction, so an action on a
# million jobs never holds a million row locks, and workers keep claiming meanwhile.
BULK_BATCH = 5000

_ELIGIBLE = {
    "retry": sql.RETRYABLE,
    "cancel": sql.CANCELLABLE,
    "delete": sql.DELETABLE,
}

_ACTION_SQL = {
    "retry": sql.retry_jobs,
    "cancel": sql.cancel_jobs,
    "delete": sql.delete_jobs,
}


@dataclass(frozen=True, slots=True)
class Purged:
    """One retention pass: whether this worker held the purge, and rows deleted per state."""

    held: bool
    done: int
    cancelled: int
    dead_letter: int

    @property
    def total(self) -> int:
        return self.done + self.cancelled + self.dead_letter


class AdminStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def list_jobs(
        self,
        job_filter: JobFilter,
        limit: int,
        offset: int = 0,
        after: tuple[datetime, str] | None = None,
    ) -> list[JobInfo]:
        """Newest first; ``after`` is the (created_at, id) of the last row of the previous
        page (keyset paging)."""
        query, args = list_query(job_filter, after)
        rows = await self._store.fetch(query, limit, offset, *args)
        return [job_row_to_dict(row) for row in rows]

    async def count(self, job_filter: JobFilter, statuses: tuple[str, ...]) -> int:
        where, args = job_filter.where(1)
        return int(await self._store.fetchval(sql.count_jobs(statuses, where), *args))

    def eligible(self, action: str, job_filter: JobFilter) -> tuple[str, ...]:
        """The states of ``job_filter`` that ``action`` applies to."""
        return tuple(s for s in job_filter.statuses if s in _ELIGIBLE[action])

    async def act(self, action: str, job_filter: JobFilter) -> int:
        """Apply ``action`` to every matching job it applies to; returns how many changed."""
        statuses = self.eligible(action, job_filter)
        if not statuses:
            return 0
        where, args = job_filter.where(3)
        query = _ACTION_SQL[action](statuses, where)
        changed = 0
        last: str | None = None
        while True:
            rows = await self._store.fetch(query, BULK_BATCH, last, *args)
            changed += int(rows[0]["n"])
            last = rows[0]["last"]
            if last is None:  # nothing left past the last batch
                return changed

    async def act_one(self, action: str, job_id: str) -> bool:
        """``action`` on one job; False when the job is missing or in a state it does not
        apply to (a running job is never retried, cancelled or deleted from here)."""
        where = "id = $3::uuid"
        query = _ACTION_SQL[action](_ELIGIBLE[action], where)
        rows = await self._store.fetch(query, 1, None, job_id)
        return bool(rows[0]["n"])

    async def queue_stats(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._store.fetch(sql.QUEUE_STATS)]

    async def await_job(self, job_id: str) -> JobEnding | None:
        """Mark the job as awaited and read where it stands (None: no such job)."""
        return _outcome(await self._store.fetch(sql.AWAIT_JOB, job_id))

    async def read_outcome(self, job_id: str) -> JobEnding | None:
        return _outcome(await self._store.fetch(sql.READ_OUTCOME, job_id))

    async def purge_expired(
        self, done_s: float, cancelled_s: float, dead_letter_s: float, batch: int
    ) -> Purged:
        row = (
            await self._store.fetch(sql.PURGE_EXPIRED, done_s, cancelled_s, dead_letter_s, batch)
        )[0]
        return Purged(bool(row["held"]), row["done"], row["cancelled"], row["dead_letter"])


def list_query(
    job_filter: JobFilter, after: tuple[datetime, str] | None = None
) -> tuple[str, list[Any]]:
    """The listing statement and its arguments after $1 (limit) and $2 (offset)."""
    where, args = job_filter.where(3)
    queued_where, _ = job_filter.where(3, byte_order=True)
    if after is not None:
        keyset = f" AND (created_at, id) < (${len(args) + 3}::timestamptz, ${len(args) + 4}::uuid)"
        where += keyset
        queued_where += keyset
        args.extend(after)
    query = sql.list_jobs(
        job_filter.statuses, where, limit="$1::int", offset="$2::int", queued_where=queued_where
    )
    return query, args


def _outcome(rows: list[Any]) -> JobEnding | None:
    if not rows:
        return None
    status, result, last_error, attempts, errors = rows[0]
    return JobEnding(
        status=JobStatus(status),
        result=None if result is None else json.loads(result),
        last_error=last_error,
        attempts=attempts,
        errors=parse_errors(errors),
    )


__all__ = ["STATUSES", "AdminStore", "Purged"]
