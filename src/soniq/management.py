"""Managing jobs: ``get_job``, the dead letters (``list_dead_letters``, ``retry_dead_letter``,
``retry_all_dead_letters``), ``list_jobs``, ``iter_jobs``, ``get_result``, ``retry_job``,
``delete_job``, ``cancel_job``, ``bulk_jobs`` and ``get_queue_stats``, mixed into
:class:`soniq.Soniq`.

Every dict returned for a job has the shape of ``get_job``'s (docs/managing-jobs.md lists the
keys); the dashboard stands on these shapes, so keys are only ever added.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

from .control import CancelResult
from .errors import ConfigurationError, JobNotFound
from .job_filters import (
    JobFilter,
    check_action,
    check_limit,
    make_filter,
)
from .job_filters import (
    job_id as parse_job_id,
)
from .jobs import JobInfo
from .results import ResultWaiter, unwrap
from .store import Store
from .store_admin import AdminStore

# Rows per page of iter_jobs: each page is one keyset query costing the same at any depth.
ITER_PAGE = 500

_FILTER_NAMES = (
    "queue",
    "status",
    "job_name",
    "args_contains",
    "created_after",
    "created_before",
)


class ManagesJobs:
    """The managing methods of :class:`soniq.Soniq` (docs/managing-jobs.md)."""

    _store: Store
    _manager_parts: tuple[AdminStore, ResultWaiter] | None = None

    @property
    def _admin(self) -> AdminStore:
        return self._parts()[0]

    def _parts(self) -> tuple[AdminStore, ResultWaiter]:
        if self._manager_parts is None:
            admin = AdminStore(self._store)
            self._manager_parts = (admin, ResultWaiter(self._store, admin))
        return self._manager_parts

    async def get_job(self, job_id: str) -> JobInfo | None:
        """The job's row as a dict (:class:`soniq.jobs.JobInfo`), or None if no such job."""
        return await self._store.get_job(parse_job_id(job_id))

    async def list_dead_letters(self, limit: int = 100) -> list[JobInfo]:
        return await self._store.dead_letters(limit)

    async def retry_dead_letter(self, job_id: str) -> bool:
        """Put a dead-lettered job back in its queue with fresh attempts."""
        return bool(await self._store.retry_dead_letters([parse_job_id(job_id)]))

    async def retry_all_dead_letters(self) -> list[str]:
        return await self._store.retry_dead_letters(None)

    async def list_jobs(
        self,
        *,
        queue: str | None = None,
        status: str | Iterable[str] | None = None,
        job_name: str | None = None,
        args_contains: Mapping[str, Any] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
        after: Mapping[str, Any] | None = None,
    ) -> list[JobInfo]:
        """Jobs newest first (by creation), each shaped like ``get_job``'s. ``status`` is one
        state or several; ``args_contains`` a dict the job's arguments contain (jsonb @>);
        ``created_after`` (inclusive) and ``created_before`` aware datetimes. For more than a
        page, ``iter_jobs`` costs the same per page at any depth; a large ``offset`` does not.
        ``after`` (the last job of the previous page, or any mapping with its ``created_at``
        and ``id``) pages by keyset too: the jobs listed after that one."""
        job_filter = make_filter(
            queue=queue,
            status=status,
            job_name=job_name,
            args_contains=args_contains,
            created_after=created_after,
            created_before=created_before,
        )
        check_limit(limit, offset)
        return await self._admin.list_jobs(job_filter, limit, offset, after=_keyset(after))

    def iter_jobs(
        self,
        *,
        queue: str | None = None,
        status: str | Iterable[str] | None = None,
        job_name: str | None = None,
        args_contains: Mapping[str, Any] | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        page_size: int = ITER_PAGE,
    ) -> AsyncIterator[JobInfo]:
        """Every matching job, newest first: ``async for job in app.iter_jobs(...)``. Pages
        of ``page_size`` by keyset on (created_at, id), each costing the same to the end."""
        # Checked here, at the call, not at the first iteration.
        job_filter = make_filter(
            queue=queue,
            status=status,
            job_name=job_name,
            args_contains=args_contains,
            created_after=created_after,
            created_before=created_before,
        )
        check_limit(page_size)
        return self._pages(job_filter, page_size)

    async def _pages(self, job_filter: JobFilter, page_size: int) -> AsyncIterator[JobInfo]:
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._admin.list_jobs(job_filter, page_size, after=after)
            for job in page:
                yield job
            if len(page) < page_size:
                return
            after = (page[-1]["created_at"], page[-1]["id"])

    async def get_result(
        self, job_id: str, *, wait: float | None = None, result_model: Any = None
    ) -> Any:
        """The job's stored return value once it is done; None while it is not (and for a job
        that failed or was cancelled) when ``wait`` is None. With ``wait`` seconds, waits for
        the job to end (LISTEN/NOTIFY): TimeoutError past it, :class:`soniq.JobFailed` for a
        dead letter, :class:`soniq.JobCancelled`. ``result_model`` (a pydantic model or any
        type pydantic validates) checks and converts the value. JobNotFound for no such job."""
        jid = parse_job_id(job_id)
        if wait is not None and (
            isinstance(wait, bool)
            or not isinstance(wait, (int, float))
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise ConfigurationError(
                f"wait must be a number of seconds (0 or more) or None, not {wait!r}"
            )
        adapter = _adapter(result_model)
        if wait is None:
            outcome = await self._admin.read_outcome(jid)
            if outcome is None:
                raise JobNotFound(f"No job with id {jid} (deleted, or never enqueued)")
            if outcome.status != "done":
                return None
            value = outcome.result
        else:
            value = unwrap(jid, await self._parts()[1].wait(jid, float(wait)))
        return value if adapter is None else adapter.validate_python(value)

    async def retry_job(self, job_id: str) -> bool:
        """Run a dead-lettered, cancelled or done job again, with fresh attempts; False if the
        job is missing or queued or running."""
        return await self._admin.act_one("retry", parse_job_id(job_id))

    async def cancel_job(self, job_id: str) -> CancelResult:
        """Cancel a job: a queued one at once (``CANCELLED``); a running one is stopped by its
        worker within about a second (``CANCEL_REQUESTED``: an ``async def`` job's task is
        cancelled, a plain ``def`` job sees ``cancel_requested``), and ends ``cancelled``.
        ``ALREADY_FINISHED`` or ``NOT_FOUND`` otherwise. Only ``CANCELLED`` is truthy, as the
        bool this returned before job control (docs/job-control.md)."""
        return await self._store.control.cancel_job(parse_job_id(job_id))

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job that is not running; False if no job was deleted."""
        return await self._admin.act_one("delete", parse_job_id(job_id))

    async def bulk_jobs(self, action: str, *, dry_run: bool = False, **filters: Any) -> int:
        """``retry``, ``cancel`` or ``delete`` every job matching the filters (those of
        ``list_jobs``) that the action applies to; returns how many changed, or with
        ``dry_run`` how many would, changing nothing. With no filter at all, refused unless
        ``all=True``."""
        check_action(action)
        every = filters.pop("all", False)
        unknown = sorted(set(filters) - set(_FILTER_NAMES))
        if unknown:
            raise ConfigurationError(
                f"bulk_jobs() got unknown filter(s) {', '.join(unknown)}; filters are "
                f"{', '.join(_FILTER_NAMES)} (and all=True for every job)"
            )
        job_filter = make_filter(**filters)
        if not job_filter.narrows and every is not True:
            raise ConfigurationError(
                f"bulk_jobs({action!r}) with no filter would {action} every job; pass a filter "
                f"(queue=, status=, job_name=, args_contains=, created_after=, created_before=) "
                f"or all=True"
            )
        if dry_run:
            return await self._admin.count(job_filter, self._admin.eligible(action, job_filter))
        return await self._admin.act(action, job_filter)

    async def get_queue_stats(self) -> list[dict[str, Any]]:
        """Per queue, sorted by name: ``queue``, ``total``, ``queued``, ``processing``,
        ``done``, ``dead_letter``, ``cancelled``. It counts every row (see the docs)."""
        return await self._admin.queue_stats()

    async def _close_management(self) -> None:
        if self._manager_parts is not None:
            await self._manager_parts[1].close()


def _keyset(after: Mapping[str, Any] | None) -> tuple[datetime, str] | None:
    if after is None:
        return None
    created_at = after.get("created_at") if isinstance(after, Mapping) else None
    if not isinstance(created_at, datetime) or created_at.tzinfo is None:
        raise ConfigurationError(
            f"after= must be a job from the previous page (a mapping with an aware "
            f"created_at datetime and an id), not {after!r}"
        )
    return created_at, parse_job_id(str(after.get("id")))


def _adapter(result_model: Any) -> Any:
    if result_model is None:
        return None
    from pydantic import TypeAdapter  # pydantic is already a dependency (settings)

    try:
        return TypeAdapter(result_model)
    except Exception as exc:
        raise ConfigurationError(
            f"result_model={result_model!r} is not a type pydantic can validate: {exc}"
        ) from None
