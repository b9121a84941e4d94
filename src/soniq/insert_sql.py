"""The statement that writes a batch of pending jobs, chosen by its shape, and the error for a
value the database refused. Shared by the async store and ``enqueue_sync`` (which runs it on
psycopg connections, in its ``%s`` form)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from . import sql
from .errors import JobArgumentsError
from .jobs import PendingJob


def _row(j: PendingJob) -> tuple[Any, ...]:
    """The columns of ``sql.INSERT_JOB`` for one job, in its order (the other statements take a
    prefix of them, or them and more, or them as columns of a batch)."""
    return (
        j.id,
        j.spec.name,
        j.queue,
        j.args_json,
        j.priority,
        j.spec.max_attempts,
        j.scheduled_at,
        j.delay_s,
        json.dumps(j.trace_context) if j.trace_context else None,
    )


def insert_statement(jobs: Sequence[PendingJob]) -> tuple[str, tuple[Any, ...]]:
    """The statement that writes ``jobs`` and its arguments (``$n`` placeholders)."""
    if len(jobs) == 1:
        j = jobs[0]
        if j.schedule is not None:
            return sql.INSERT_SCHEDULED_JOB, (*_row(j), j.schedule, j.fire_time)
        if _ready_plain(j):
            # Due now, no trace context: the columns after max_attempts keep their defaults.
            return sql.INSERT_READY_JOB, _row(j)[:6]
        return sql.INSERT_JOB, _row(j)
    if _uniform(jobs):
        j = jobs[0]
        return sql.INSERT_UNIFORM_JOBS, (
            [j.id for j in jobs],
            [j.args_json for j in jobs],
            [json.dumps(j.trace_context) if j.trace_context else None for j in jobs],
            j.spec.name,
            j.queue,
            j.priority,
            j.spec.max_attempts,
            j.scheduled_at,
            j.delay_s,
        )
    # One array per column, in INSERT_JOB's order.
    return sql.INSERT_JOBS, tuple(list(column) for column in zip(*map(_row, jobs), strict=True))


def unstorable(jobs: Sequence[PendingJob], exc: BaseException) -> JobArgumentsError:
    """The error for a value PostgreSQL refused (``exc``, whatever the driver)."""
    names = ", ".join(sorted({repr(j.spec.name) for j in jobs}))
    return JobArgumentsError(
        f"Job {names} cannot be stored: {exc}. Strings may not contain NUL characters "
        f"(\\x00) or unpaired surrogates, and priority is a 32-bit integer"
    )


def _ready_plain(job: PendingJob) -> bool:
    """Ready now and without trace context: the column defaults are right for it."""
    return job.scheduled_at is None and job.delay_s == 0.0 and not job.trace_context


def _uniform(jobs: Sequence[PendingJob]) -> bool:
    """Whether every job shares the first one's name, queue, priority and schedule."""
    first = jobs[0]
    key = (first.spec, first.queue, first.priority, first.scheduled_at, first.delay_s)
    return all((j.spec, j.queue, j.priority, j.scheduled_at, j.delay_s) == key for j in jobs)
