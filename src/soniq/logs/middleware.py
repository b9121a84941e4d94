"""The structured-log layer: one record per attempt event, a static message, data in fields.

It translates chain events only. It sits behind tracing (order 10) in the chain, so the
attempt's span is current in here and its ids go on every record.

At INFO an attempt logs one record, its end (``job.done``; failures are WARNING and ERROR), as
Oban does; ``job.started`` is DEBUG. A record costs about as much as a span, and a start line
says little that the end line (with ``queue_wait_ms`` and ``duration_ms``) does not.
"""

from __future__ import annotations

import builtins
import logging
from contextvars import Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import SpanContext, get_current_span

from ..context import AttemptContext
from ..control import Snooze
from ..jobs import Outcome
from ..middleware import ObservingLayer
from .context_filter import attach_context_filter, attempt_in_chain
from .records import make_record

if TYPE_CHECKING:
    from ..worker import Worker

JOB_STARTED = "job.started"
JOB_DONE = "job.done"
JOB_RETRY = "job.retry"
JOB_DEAD_LETTER = "job.dead_letter"
JOB_SNOOZED = "job.snoozed"
JOB_CANCELLED = "job.cancelled"
_CONTROL_EVENTS = {Outcome.SNOOZED: JOB_SNOOZED, Outcome.CANCELLED: JOB_CANCELLED}
# Read once: an enum member looked up on its class costs ~70 ns, on every job.done line.
_DONE = Outcome.DONE
# The worker logs these two itself (soniq.worker), whether or not this layer is installed.
WORKER_STARTED = "worker.started"
WORKER_STOPPING = "worker.stopping"

MESSAGES = {
    JOB_STARTED: "Job started",
    JOB_DONE: "Job done",
    JOB_RETRY: "Job failed; will retry",
    JOB_DEAD_LETTER: "Job failed; moved to the dead-letter queue",
    JOB_SNOOZED: "Job snoozed; runs again later",
    JOB_CANCELLED: "Job cancelled",
}


@dataclass(frozen=True)
class LogConfig:
    """Options for ``app.instrument(logs=LogConfig(...))``."""

    #: Logger the job events go to; set its level to WARNING to keep only failures.
    logger_name: str = "soniq.jobs"
    #: Put the job's keyword arguments on the attempt's records (``job.started`` and its end:
    #: ``job.done``, ``job.retry`` or ``job.dead_letter``) as ``job_args``. Off: arguments often
    #: hold personal data or secrets, and logs are kept and shared more widely than the queue.
    log_args: bool = False
    #: Put the traceback on ``job.retry`` records too (it is always on ``job.dead_letter``).
    retry_traceback: bool = False
    #: Add a :class:`~soniq.logs.JobContextFilter` to the root logger's handlers when installed
    #: and when a worker starts, so the user's own records carry the job and trace ids.
    attach_context_filter: bool = True


class LogMiddleware(ObservingLayer):
    telemetry = True
    order = 20
    logs_failures = True

    def __init__(self, config: LogConfig | None = None) -> None:
        self.config = config or LogConfig()
        self.logger = logging.getLogger(self.config.logger_name)

    def __repr__(self) -> str:
        return f"LogMiddleware({self.config!r})"

    async def startup(self, worker: Worker) -> None:
        # Logging is often configured after the app is built; by now it is in place.
        if self.config.attach_context_filter:
            attach_context_filter()

    def begin(self, ctx: AttemptContext) -> Token[AttemptContext | None]:
        log = self.logger
        if log.isEnabledFor(logging.DEBUG):
            started = {"event": JOB_STARTED, **_job_fields(ctx)}
            if self.config.log_args:
                started["job_args"] = ctx.args
            _emit(log, logging.DEBUG, MESSAGES[JOB_STARTED], started)
        return attempt_in_chain.set(ctx)

    def end(
        self, ctx: AttemptContext, state: Token[AttemptContext | None], error: BaseException | None
    ) -> None:
        try:
            self._ended(ctx, error)
        finally:
            attempt_in_chain.reset(state)

    def _ended(self, ctx: AttemptContext, error: BaseException | None) -> None:
        if error is not None:
            if isinstance(error, Exception):
                self._failed(ctx, error, _job_fields(ctx))
            elif ctx.outcome == Outcome.CANCELLED and self.logger.isEnabledFor(logging.INFO):
                cancelled = {
                    "event": JOB_CANCELLED,
                    **_job_fields(ctx),
                    **_timing(ctx),
                    "outcome": Outcome.CANCELLED,
                }
                _emit(self.logger, logging.INFO, MESSAGES[JOB_CANCELLED], cancelled)
            return
        log = self.logger
        snooze = ctx.result if isinstance(ctx.result, Snooze) else None
        if snooze is not None and ctx.outcome == Outcome.DEAD_LETTER:  # past max_snoozes
            dead = {
                "event": JOB_DEAD_LETTER,
                **_job_fields(ctx),
                **_timing(ctx),
                "outcome": Outcome.DEAD_LETTER,
                "error": f"snoozed more than max_snoozes ({ctx.spec.max_snoozes})",
            }
            log.error(MESSAGES[JOB_DEAD_LETTER], extra=dead)
        elif log.isEnabledFor(logging.INFO):
            outcome = ctx.outcome or _DONE
            event = JOB_DONE if outcome == _DONE else _CONTROL_EVENTS.get(outcome, JOB_DONE)
            # The fields go straight onto the record, in the order of the JSON line; the ids
            # are the attempt span's (the tracing layer's, on the context, else the current).
            record = make_record(log, logging.INFO, MESSAGES[event])
            done = record.__dict__
            done["event"] = event
            done["job_id"] = ctx.job_id
            done["job_name"] = ctx.job_name
            done["queue"] = ctx.queue
            done["attempt"] = ctx.attempt
            done["max_attempts"] = ctx.max_attempts
            done["queue_wait_ms"] = _round3(ctx.queue_wait_s * 1000.0)
            done["worker_id"] = ctx.worker_id
            span = ctx.span_context if ctx.span_context is not None else _current_span()
            if span.is_valid:  # as W3C spells them; to_bytes().hex() is twice format()'s speed
                done["trace_id"] = span.trace_id.to_bytes(16, "big").hex()
                done["span_id"] = span.span_id.to_bytes(8, "big").hex()
            if ctx.duration_ms is not None:
                done["duration_ms"] = _round3(ctx.duration_ms)
            done["outcome"] = outcome
            if snooze is not None:
                done["snooze_seconds"] = snooze.seconds
                if snooze.reason:
                    done["snooze_reason"] = snooze.reason
            if self.config.log_args:
                done["job_args"] = ctx.args
            log.handle(record)

    def _failed(self, ctx: AttemptContext, exc: Exception, fields: dict[str, Any]) -> None:
        # Outer layers see the outcome settled by the inner ones; the fallback only guards a
        # chain that somehow did not settle it.
        outcome = ctx.outcome or (Outcome.DEAD_LETTER if ctx.final else Outcome.RETRY)
        event = JOB_RETRY if outcome == "retry" else JOB_DEAD_LETTER
        record = {
            "event": event,
            **fields,
            **_timing(ctx),
            "outcome": outcome,
            "error_type": _type_name(exc),
            "error": str(exc),
        }
        if self.config.log_args:
            record["job_args"] = ctx.args
        if event == JOB_RETRY:
            if ctx.retry_delay is not None:
                record["retry_delay_ms"] = _round3(ctx.retry_delay * 1000.0)
            if ctx.next_attempt_at is not None:
                record["next_attempt_at"] = ctx.next_attempt_at.isoformat()
            exc_info = exc if self.config.retry_traceback else None
            self.logger.warning(MESSAGES[JOB_RETRY], extra=record, exc_info=exc_info)
        else:
            self.logger.error(MESSAGES[JOB_DEAD_LETTER], extra=record, exc_info=exc)


def _emit(log: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """``log.log(level, message, extra=fields)`` without looking up the caller's file and
    line (they would always name this module, and the stack walk is a fifth of what a record
    costs) or making the record from scratch (:mod:`.records`). The logger's filters,
    handlers and propagation apply as with ``log.log``."""
    record = make_record(log, level, message)
    record.__dict__.update(fields)
    log.handle(record)


def _job_fields(ctx: AttemptContext) -> dict[str, Any]:
    fields = {
        "job_id": ctx.job_id,
        "job_name": ctx.job_name,
        "queue": ctx.queue,
        "attempt": ctx.attempt,
        "max_attempts": ctx.max_attempts,
        "queue_wait_ms": _round3(ctx.queue_wait_s * 1000.0),
        "worker_id": ctx.worker_id,
    }
    span = ctx.span_context if ctx.span_context is not None else _current_span()
    if span.is_valid:
        fields["trace_id"] = span.trace_id.to_bytes(16, "big").hex()
        fields["span_id"] = span.span_id.to_bytes(8, "big").hex()
    return fields


def _current_span() -> SpanContext:
    # Without Soniq's tracing layer (ctx.span_context unset), another may have made one current.
    return get_current_span().get_span_context()


def _timing(ctx: AttemptContext) -> dict[str, Any]:
    # Unknown when the attempt failed before the job function was called (in a middleware).
    if ctx.duration_ms is None:
        return {}
    return {"duration_ms": _round3(ctx.duration_ms)}


def _round3(ms: float) -> float:
    """``round(ms, 3)`` for the non-negative times logged here, at a third of its cost
    (``round`` to digits goes through decimal text). An integer count of microseconds over
    1000 is the double nearest that decimal, so the JSON shows the same digits."""
    return int(ms * 1000.0 + 0.5) / 1000.0


def _type_name(exc: BaseException) -> str:
    """``ValueError`` for built-ins, ``package.module.Error`` otherwise: a name to search by."""
    cls = type(exc)
    if cls.__module__ == builtins.__name__:
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
