"""Structured logs for Soniq: job events as records with fields, linked to the attempt's trace.

``app.instrument(logs=True)`` (or ``logs=LogConfig(...)``) adds :class:`LogMiddleware`, the
``logs`` instrumentation (:mod:`soniq.logs.plugin`, found by entry point; importing this package
does not load it). :class:`JsonFormatter`, :class:`TextFormatter` and
:class:`JobContextFilter` work on any handler; the default failure log and the CLI's logging
set-up live here too. See docs/logs.md for every event and field.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .context_filter import JobContextFilter, attach_context_filter, trace_ids
from .failures import FailureLogMiddleware
from .formatter import JsonFormatter, TextFormatter

if TYPE_CHECKING:
    from .middleware import (
        JOB_DEAD_LETTER,
        JOB_DONE,
        JOB_RETRY,
        JOB_STARTED,
        WORKER_STARTED,
        WORKER_STOPPING,
        LogConfig,
        LogMiddleware,
    )
    from .plugin import install

# The log layer and its install are the ``logs`` instrumentation (:mod:`soniq.logs.plugin`):
# importing soniq.logs for its formatters must not load them, so they are found on first use.
_LAYER_NAMES = frozenset(
    {
        "JOB_DEAD_LETTER",
        "JOB_DONE",
        "JOB_RETRY",
        "JOB_STARTED",
        "WORKER_STARTED",
        "WORKER_STOPPING",
        "LogConfig",
        "LogMiddleware",
    }
)


def __getattr__(name: str) -> Any:
    if name in _LAYER_NAMES:
        from . import middleware

        return getattr(middleware, name)
    if name == "install":
        from .plugin import install

        return install
    raise AttributeError(f"module 'soniq.logs' has no attribute {name!r}")


__all__ = [
    "JOB_DEAD_LETTER",
    "JOB_DONE",
    "JOB_RETRY",
    "JOB_STARTED",
    "WORKER_STARTED",
    "WORKER_STOPPING",
    "FailureLogMiddleware",
    "JobContextFilter",
    "JsonFormatter",
    "LogConfig",
    "LogMiddleware",
    "TextFormatter",
    "attach_context_filter",
    "configure_logging",
    "install",
    "trace_ids",
]

FORMATS = ("text", "json")


def configure_logging(fmt: str, level: str | int) -> None:
    """Root logging for the CLI: one handler on stderr, readable text at a terminal or one
    JSON object per line, with the job and trace ids on every record logged during a job."""
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(JobContextFilter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # Python's warnings would otherwise go to stderr as bare text, breaking one-JSON-per-line.
    logging.captureWarnings(True)
