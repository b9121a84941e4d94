"""Job data, in one place: a job about to be written, a claimed job, what an attempt leaves to
be written, a job's status and an attempt's outcome, and the shape ``Soniq.get_job`` returns.

The enums are ``str`` subclasses, so ``ctx.outcome == "retry"`` and ``job["status"] ==
"done"`` keep working, and they format, hash and serialise as their value. How an attempt's
outcome becomes the job's stored status is written once, here (:func:`status_after`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypedDict

import asyncpg

if TYPE_CHECKING:
    from .context import AttemptContext
    from .registry import JobSpec
    from .unique import UniqueKey


class _Text(str, enum.Enum):
    """An enum whose members are their text: ``str()``, f-strings and JSON give the value."""

    def __str__(self) -> str:
        return self.value  # type: ignore[no-any-return]

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class JobStatus(_Text):
    """A job's ``status`` column."""

    QUEUED = "queued"  # waiting, ready now or scheduled for later (delayed, retry)
    PROCESSING = "processing"  # claimed by a worker (running, or in its buffer)
    DONE = "done"
    DEAD_LETTER = "dead_letter"  # failed its last attempt; kept for a person to look at
    CANCELLED = "cancelled"


class Outcome(_Text):
    """How an attempt ended, as the middleware chain settles it (``AttemptContext.outcome``)."""

    DONE = "done"
    RETRY = "retry"  # failed; the job runs again after ``retry_delay``
    DEAD_LETTER = "dead_letter"  # failed its last attempt (or snoozed past max_snoozes)
    SNOOZED = "snoozed"  # returned or raised soniq.Snooze: back later, the attempt not counted
    CANCELLED = "cancelled"  # stopped by app.cancel_job


def status_after(outcome: Outcome | str | None) -> JobStatus:
    """The job's stored status after an attempt with this outcome: a retry puts the job back
    in its queue; an attempt that failed without a settled outcome counts as its last."""
    if outcome == Outcome.DONE:
        return JobStatus.DONE
    if outcome in (Outcome.RETRY, Outcome.SNOOZED):
        return JobStatus.QUEUED
    if outcome == Outcome.CANCELLED:
        return JobStatus.CANCELLED
    return JobStatus.DEAD_LETTER


@dataclass(eq=False)
class PendingJob:
    """A job about to be written. Enqueue middlewares may add to ``trace_context``."""

    id: str
    spec: JobSpec
    queue: str
    args_json: str
    priority: int
    scheduled_at: datetime | None
    delay_s: float
    trace_context: dict[str, str] = field(default_factory=dict)
    #: Set when a schedule fires (or is triggered): its name and the fire time.
    schedule: str | None = None
    fire_time: datetime | None = None
    # Unique jobs (soniq.unique): the key and rule written with the job; after the write,
    # whether it was deduplicated (``id`` is then the existing job's) or replaced its args.
    unique: UniqueKey | None = None
    deduplicated: bool = False
    replaced: bool = False

    @property
    def job_name(self) -> str:
        return self.spec.name


class ClaimedJob(asyncpg.Record):
    """A row the worker's claim returned, read by name: asyncpg builds the rows as this class
    (``record_class``), so typing them costs nothing on the hot path, and each field is a
    C-level index lookup, as fast as reading the row by key.

    ``attempt`` is the number of the attempt the worker is about to run. ``counted``: the claim
    counted it as started (it took a free slot); otherwise the job is claimed ahead, and its
    start is written by a later round trip. ``suspect``: a worker that held it claimed ahead
    was lost, so its start must be written before it runs.
    """

    __slots__ = ()

    # Positions are those of sql._CLAIMED_OUT (tests/test_jobs.py checks the names).
    if TYPE_CHECKING:
        id: str
        job_name: str
        queue: str
        args: str  # JSON text
        priority: int
        attempt: int
        max_attempts: int
        created_at: datetime
        scheduled_at: datetime
        trace_context: str | None  # JSON text
        revived: bool
        queue_wait_s: float  # from due to claim, on the database clock
        counted: bool
        suspect: bool
        schedule_name: str | None  # the schedule that fired it (soniq.schedules)
        fire_time: datetime | None
        snoozes: int  # times the job returned soniq.Snooze
    else:
        id = property(itemgetter(0))
        job_name = property(itemgetter(1))
        queue = property(itemgetter(2))
        args = property(itemgetter(3))
        priority = property(itemgetter(4))
        attempt = property(itemgetter(5))
        max_attempts = property(itemgetter(6))
        created_at = property(itemgetter(7))
        scheduled_at = property(itemgetter(8))
        trace_context = property(itemgetter(9))
        revived = property(itemgetter(10))
        queue_wait_s = property(itemgetter(11))
        counted = property(itemgetter(12))
        suspect = property(itemgetter(13))
        schedule_name = property(itemgetter(14))
        fire_time = property(itemgetter(15))
        snoozes = property(itemgetter(16))

    FIELDS: ClassVar[tuple[str, ...]] = (
        "id",
        "job_name",
        "queue",
        "args",
        "priority",
        "attempt",
        "max_attempts",
        "created_at",
        "scheduled_at",
        "trace_context",
        "revived",
        "queue_wait_s",
        "counted",
        "suspect",
        "schedule_name",
        "fire_time",
        "snoozes",
    )

    @property
    def start_written_first(self) -> bool:
        """Whether this job, claimed ahead, may start only once its start is written: a suspect
        job, and a job's last attempt. If such a job killed the worker unrecorded, lease
        recovery could neither count the attempt (the job might never have started: a crash
        must not dead-letter it) nor leave it uncounted (it might be what kills workers, and
        loop); see sql_liveness.RECOVER_LOST_JOBS."""
        return bool(self[13] or self[5] >= self[6])


class Claim(NamedTuple):
    """What one round trip claimed, and (when asked and the claim came back short) in how many
    seconds the next delayed job or retry comes due (None: none is waiting)."""

    jobs: list[ClaimedJob]
    next_due_s: float | None


class StartedAttempt(NamedTuple):
    """An attempt of a job claimed ahead that started before the database knew: the next
    round trip writes its start (a finish record covers the start too)."""

    id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class FinishedAttempt:
    """What a finished attempt leaves to be written: the job's new status and details.

    ``attempt`` is the attempt's number; the row's count becomes that number, or one less with
    ``refund``, so writing the same record twice is harmless.
    """

    id: str
    status: JobStatus  # done | queued (retry or put back) | dead_letter
    result: str | None = None  # JSON text
    error: str | None = None
    traceback: str | None = None
    delay_s: float = 0.0
    refund: int = 0  # 1 when the attempt did not count (graceful shutdown)
    # JSON text replacing the job's trace_context (None keeps it): a failed attempt leaves its
    # own span context there so the next attempt can link to it.
    trace_context: str | None = None
    attempt: int = field(kw_only=True)

    @classmethod
    def put_back(cls, job_id: str, attempt: int) -> FinishedAttempt:
        """The job goes back to its queue, the attempt not counted."""
        return cls(job_id, JobStatus.QUEUED, refund=1, attempt=attempt)

    @classmethod
    def failed(cls, ctx: AttemptContext, exc: BaseException) -> FinishedAttempt:
        """A failed attempt, its job retried or dead-lettered as ``ctx.outcome`` says."""
        status = status_after(ctx.outcome)
        if status is JobStatus.DONE:  # settled as done, yet it raised: it failed
            status = JobStatus.DEAD_LETTER
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(
            ctx.job_id,
            status,
            error=f"{type(exc).__name__}: {exc}",
            traceback=tb,
            delay_s=(ctx.retry_delay or 0.0) if status is JobStatus.QUEUED else 0.0,
            # Tracing may have added the failed attempt's span context for the next attempt.
            trace_context=json.dumps(ctx.trace_context) if ctx.trace_context else None,
            attempt=ctx.attempt,
        )

    def storable(self) -> FinishedAttempt:
        """This record as the database can surely store it: without its result, and its texts
        with NUL and unpaired surrogates escaped (the database refused it as it was)."""
        # replace() keeps every other field (status, delay, refund, trace context) as it was.
        return dataclasses.replace(
            self,
            result=None,
            error=None if self.error is None else storable_text(self.error),
            traceback=None if self.traceback is None else storable_text(self.traceback),
        )


class LostJob(NamedTuple):
    """A job lease recovery took from a silent worker: queued again, or dead-lettered."""

    id: str
    job_name: str
    status: JobStatus


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL can store it: NUL and unpaired surrogates written as escapes."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class ErrorEntry(TypedDict):
    """One failed attempt in ``JobInfo["errors"]`` (oldest first; the newest 20 are kept)."""

    attempt: int
    at: datetime
    worker_id: str | None
    error_type: str  # e.g. "ValueError"; "WorkerLost" for an attempt whose worker died
    message: str  # at most 2,000 characters
    traceback: str | None  # its last 8,000 characters


class JobInfo(TypedDict):
    """A job as ``Soniq.get_job`` and ``list_dead_letters`` return it."""

    id: str
    job_name: str
    args: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    queue: str
    priority: int
    scheduled_at: datetime
    last_error: str | None
    traceback: str | None
    result: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    errors: list[ErrorEntry]  # every failed attempt, oldest first (docs/managing-jobs.md)
    # The W3C trace context the job carries (its enqueue's, or its last attempt's span for the
    # next attempt to link), e.g. {"traceparent": "00-<trace id>-<span id>-01"}; None untraced.
    trace_context: dict[str, str] | None


#: The states a job ends in (nothing runs it again unless someone retries it).
FINAL_STATUSES = frozenset({JobStatus.DONE, JobStatus.DEAD_LETTER, JobStatus.CANCELLED})


@dataclass(frozen=True, slots=True)
class JobEnding:
    """Where a job stands, as ``get_result`` reads it: its status and what it left behind."""

    status: JobStatus
    result: Any
    last_error: str | None
    attempts: int
    errors: list[ErrorEntry]

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES
