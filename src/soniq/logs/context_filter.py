"""Give every log record made during a job attempt that attempt's identity and trace ids.

This is a :class:`logging.Filter` for handlers rather than a log record factory: a factory
would put ``job_id`` on the record before ``extra=`` is applied, and the standard library
refuses an ``extra`` key that is already on the record (``KeyError: Attempt to overwrite``),
so a user's own ``logger.info(..., extra={"job_id": ...})`` inside a job would crash. A filter
runs after the record is made and only fills in what is missing. Handlers call their filters
synchronously in the thread and context that logged, so the attempt and the current span are
those of the code that wrote the line (and a ``QueueHandler`` filters before it queues).
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

from ..context import AttemptContext, current_attempt

# Set by the log middleware for the whole attempt it wraps, so lines logged by the user's
# middlewares and hooks carry the job too; ``current_attempt`` only covers the job function.
attempt_in_chain: ContextVar[AttemptContext | None] = ContextVar("soniq_logs_attempt", default=None)


def trace_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span as lowercase hex (W3C form), or {}."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


def attempt_fields(attempt: AttemptContext) -> dict[str, Any]:
    return {
        "job_id": attempt.job_id,
        "job_name": attempt.job_name,
        "queue": attempt.queue,
        "attempt": attempt.attempt,
    }


_ALL_FIELDS = frozenset(("job_id", "job_name", "queue", "attempt", "trace_id", "span_id"))


class JobContextFilter(logging.Filter):
    """Adds ``job_id``, ``job_name``, ``queue``, ``attempt``, ``trace_id`` and ``span_id`` to
    records logged while a job attempt runs (or while any span is current, for the trace ids).

    Put it on a handler (``handler.addFilter(JobContextFilter())``): filters on a logger see
    only records logged to that very logger, not those propagated from its children. Values
    the caller passed in ``extra=`` are kept. It never drops a record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        values = record.__dict__
        if values.keys() >= _ALL_FIELDS:
            return True  # the log layer's own records come complete
        attempt = current_attempt.get() or attempt_in_chain.get()
        fields = attempt_fields(attempt) if attempt is not None else {}
        fields.update(trace_ids())
        for key, value in fields.items():
            if key not in values:
                values[key] = value
        return True


def attach_context_filter(handlers: list[logging.Handler] | None = None) -> int:
    """Add a :class:`JobContextFilter` to each handler that has none (default: the root
    logger's handlers); returns how many handlers got one."""
    added = 0
    for handler in logging.getLogger().handlers if handlers is None else handlers:
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())
            added += 1
    return added
