"""Structured logs for Soniq: job events as records with fields, linked to the attempt's trace.

``app.instrument(logs=True)`` (or ``logs=LogConfig(...)``) adds :class:`LogMiddleware`;
:class:`JsonFormatter`, :class:`TextFormatter` and :class:`JobContextFilter` work on any
handler. See docs/logs.md for every event and field.
"""

from __future__ import annotations

import logging
from typing import Any

from .context_filter import JobContextFilter, attach_context_filter, trace_ids
from .formatter import JsonFormatter, TextFormatter
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

__all__ = [
    "JOB_DEAD_LETTER",
    "JOB_DONE",
    "JOB_RETRY",
    "JOB_STARTED",
    "WORKER_STARTED",
    "WORKER_STOPPING",
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


def install(app: Any, config: LogConfig | None = None) -> None:
    """Add the log layer to ``app`` (what ``app.instrument(logs=...)`` calls).

    Installing again with no config changes nothing; with a config, it replaces the layer's
    options in place.
    """
    if config is not None and not isinstance(config, LogConfig):
        raise TypeError(f"logs= takes True or a soniq.logs.LogConfig, not {config!r}")
    layer = LogMiddleware(config)
    if config is not None and LogMiddleware in app.middleware:
        app.middleware.replace(LogMiddleware, layer)
    else:
        app.middleware.add_builtin(layer)
    if layer.config.attach_context_filter:
        attach_context_filter()


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
