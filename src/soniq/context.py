"""What a job can learn about its own run, and the attempt state that middlewares share."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .control import Snooze
from .jobs import Outcome

if TYPE_CHECKING:
    from .registry import JobSpec

# Read once: an enum member looked up on its class costs ~70 ns, every attempt.
_DONE = Outcome.DONE


@dataclass(frozen=True)
class JobContext:
    """Injected into a job parameter annotated ``soniq.JobContext``."""

    job_id: str
    job_name: str
    attempt: int
    max_attempts: int
    queue: str
    worker_id: str
    enqueued_at: datetime
    #: The schedule that made this job and the fire time it stands for (None otherwise): a
    #: key for idempotency, e.g. "the report for 2026-03-29 09:30".
    schedule: str | None = None
    fire_time: datetime | None = None
    snoozes: int = 0
    _attempt: AttemptContext | None = field(default=None, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """True once ``app.cancel_job`` asked for this job to stop: a plain ``def`` job cannot
        be interrupted, so a long one checks this and returns early (it is then recorded as
        cancelled, whatever it returns)."""
        return self._attempt is not None and self._attempt.cancel_requested


@dataclass(eq=False)
class AttemptContext:
    """One attempt of one job, as it passes through the middleware chain.

    Middlewares read the job's identity, and after ``call_next`` returns or raises, its fate:
    ``outcome`` is ``done``, ``retry`` (with ``retry_delay`` and ``next_attempt_at``),
    ``dead_letter``, ``snoozed`` (the job returned or raised :class:`soniq.Snooze`; the delay
    in ``retry_delay``) or ``cancelled`` (``app.cancel_job`` stopped it). ``state`` is scratch
    space for middlewares.
    """

    job_id: str
    job_name: str
    queue: str
    attempt: int
    max_attempts: int
    priority: int
    args: dict[str, Any]
    enqueued_at: datetime
    scheduled_at: datetime
    queue_wait_s: float
    worker_id: str
    spec: JobSpec
    trace_context: dict[str, str] | None = None
    revived: bool = False
    schedule: str | None = None
    fire_time: datetime | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    result: Any = None
    duration_ms: float | None = None
    retry_delay: float | None = None
    next_attempt_at: datetime | None = None
    state: dict[str, Any] = field(default_factory=dict)
    snoozes: int = 0
    #: The attempt's span context (an ``opentelemetry.trace.SpanContext``), set by the tracing
    #: layer that made the span; the log and metrics layers read its ids here rather than
    #: looking the current span up again. None without tracing.
    span_context: Any = None
    # Set when app.cancel_job asks this attempt's worker to stop the job.
    cancel_requested: bool = False

    @property
    def final(self) -> bool:
        """True when this attempt is the job's last one if it fails."""
        return self.attempt >= self.max_attempts

    def job_context(self) -> JobContext:
        return JobContext(
            job_id=self.job_id,
            job_name=self.job_name,
            attempt=self.attempt,
            max_attempts=self.max_attempts,
            queue=self.queue,
            worker_id=self.worker_id,
            enqueued_at=self.enqueued_at,
            schedule=self.schedule,
            fire_time=self.fire_time,
            snoozes=self.snoozes,
            _attempt=self,
        )

    def settle_success(self, result: Any) -> None:
        if isinstance(result, Snooze):
            self.settle_snooze(result)
            return
        self.outcome = _DONE
        self.error = None
        self.result = result
        self.retry_delay = None
        self.next_attempt_at = None

    def settle_snooze(self, snooze: Snooze) -> None:
        """Snoozed, or dead-lettered once the job's max_snoozes is used up (the worker's
        statement decides the same from the stored count)."""
        self.error = None
        self.result = snooze
        limit = self.spec.max_snoozes
        if limit is not None and self.snoozes + 1 > limit:
            self.outcome = Outcome.DEAD_LETTER
            self.retry_delay = None
            self.next_attempt_at = None
            return
        self.outcome = Outcome.SNOOZED
        self.retry_delay = snooze.seconds
        self.next_attempt_at = datetime.now(timezone.utc) + timedelta(seconds=snooze.seconds)

    def settle_failure(self, error: BaseException) -> None:
        """Decide retry or dead letter, once per error, so every outer layer sees one answer."""
        if self.error is error and self.outcome is not None:
            return
        self.error = error
        self.result = None
        if self.final:
            self.outcome = Outcome.DEAD_LETTER
            self.retry_delay = None
            self.next_attempt_at = None
        else:
            self.outcome = Outcome.RETRY
            self.retry_delay = self.spec.backoff.delay(self.attempt)
            self.next_attempt_at = datetime.now(timezone.utc) + timedelta(seconds=self.retry_delay)


# The attempt being run in this task (or in the thread of a plain ``def`` job).
current_attempt: ContextVar[AttemptContext | None] = ContextVar(
    "soniq_current_attempt", default=None
)
