"""Formatters: one JSON object per line for log pipelines, one readable line for people.

The JSON formatter builds on python-json-logger rather than a hand-written encoder: it already
flattens ``extra`` fields onto the object, skips the standard record attributes, encodes
datetimes, exceptions, dataclasses and unknown objects without failing, and is a small
pure-Python package without dependencies that is maintained and typed. What Soniq adds is only
the field layout (``timestamp`` first, in UTC; ``level``, ``logger``, ``message``;
``exception`` as one string).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

_RENAMES = {"levelname": "level", "name": "logger", "exc_info": "exception"}


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per record, on one line.

    ``{"timestamp": "2026-01-02T03:04:05.678901+00:00", "level": "INFO", "logger": "soniq.jobs",
    "message": "Job done", "event": "job.done", "job_id": ..., ...}``: the timestamp is UTC
    ISO 8601, every ``extra`` field sits at the top level, and a traceback is the string field
    ``exception``. Any keyword python-json-logger's formatter takes may be passed.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", dict(_RENAMES))
        super().__init__(**kwargs)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # Set first so it leads the line, where people and tools look for it.
        # As text already: the encoder would otherwise call back into Python for a datetime.
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat()
        super().add_fields(log_data, record, message_dict)


# Fields the text formatter shows after the message, in this order. The rest (worker_id,
# span_id, ...) is in the JSON output; at a terminal it would only push the message away.
TEXT_FIELDS = (
    "job_name",
    "job_id",
    "attempt",
    "queue",
    "duration_ms",
    "queue_wait_ms",
    "retry_delay_ms",
    "error_type",
    "error",
    "trace_id",
)

DEFAULT_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """A readable line: ``time LEVEL logger: message`` and then the job's fields as
    ``key=value`` (``attempt=2/4``), then the traceback, if any, on the lines below."""

    def __init__(self, fmt: str = DEFAULT_TEXT_FORMAT, datefmt: str | None = None) -> None:
        super().__init__(fmt, datefmt)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        values = record.__dict__
        parts = []
        for key in TEXT_FIELDS:
            value = values.get(key)
            if value is None:
                continue
            if key == "attempt" and values.get("max_attempts") is not None:
                value = f"{value}/{values['max_attempts']}"
            parts.append(f"{key}={_text_value(value)}")
        return f"{line}  {' '.join(parts)}" if parts else line


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c.isspace() or c in "\"'=" for c in text):
        return json.dumps(text)  # quoted, so a reader sees where the value ends
    return text
