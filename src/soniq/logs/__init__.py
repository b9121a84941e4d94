"""Structured logs for Soniq: job events as records with fields, linked to the attempt's trace.

``app.instrument(logs=True)`` (or ``logs=LogConfig(...)``) adds :class:`LogMiddleware`;
:class:`JsonFormatter`, :class:`TextFormatter` and :class:`JobContextFilter` work on any
handler. See docs/logs.md for every event and field.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.instrumentation import config_from, install_layer

from .context_filter import JobContextFilter, attach_context_filter, trace_ids
from .failures import FailureLogMiddleware
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

if TYPE_CHECKING:
    from soniq.app import Soniq

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


def install(app: Soniq, config: LogConfig | Mapping[str, Any] | None = None) -> LogMiddleware:
    """Add the log layer to ``app`` (what ``app.instrument(logs=...)`` calls, found through
    the ``soniq.instrumentations`` entry point ``logs``); returns the layer in the chain.

    Installing again with no config, or an equal one, changes nothing; a different config
    replaces the layer in place, refused while a worker of the app runs (the rule of
    :func:`soniq.instrumentation.install_layer`, shared by every instrumentation).
    """
    wanted = config_from(LogConfig, config, "logs")
    layer = install_layer(
        app, LogMiddleware, wanted, LogMiddleware, config_of=lambda layer: layer.config
    )
    if layer.config.attach_context_filter:
        attach_context_filter()
    return layer


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
