"""Formatters: one JSON object per line for log pipelines, one readable line for people.

The JSON formatter builds on python-json-logger rather than a hand-written encoder: it already
flattens ``extra`` fields onto the object, skips the standard record attributes, encodes
datetimes, exceptions, dataclasses and unknown objects without failing, and is a small
pure-Python package without dependencies that is maintained and typed. What Soniq adds is only
the field layout (``timestamp`` first, in UTC; ``level``, ``logger``, ``message``;
``exception`` as one string).

With its default options the formatter takes a shorter path to the same line: one dict built
from the record and one call of orjson (python-json-logger's encoder still handles datetimes,
exceptions, dataclasses and unknown objects, as orjson's ``default``). The general path (field
list, renames, static fields, a hook per record) is taken whenever an option is passed. Both
write compact JSON (no spaces after ``:`` and ``,``) in ASCII.
"""

from __future__ import annotations

import json
import json.encoder
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.json import JsonFormatter as _PythonJsonFormatter

_RENAMES = {"levelname": "level", "name": "logger", "exc_info": "exception"}
# What the general path leaves out of the fields: the standard record attributes, and the
# attributes of this Python's records (taskName since 3.12).
_STANDARD = list(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
_SKIP = frozenset(RESERVED_ATTRS) | frozenset(_STANDARD)
# Shapes of records remembered per formatter; past this (keys made up per call), start over.
_MAX_SHAPES = 512
_UTC = timezone.utc


class JsonFormatter(_PythonJsonFormatter):
    """One JSON object per record, on one line.

    ``{"timestamp": "2026-01-02T03:04:05.678901+00:00", "level": "INFO", "logger": "soniq.jobs",
    "message": "Job done", "event": "job.done", "job_id": ..., ...}``: the timestamp is UTC
    ISO 8601, every ``extra`` field sits at the top level, and a traceback is the string field
    ``exception``. Any keyword python-json-logger's formatter takes may be passed.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._fast = not kwargs
        kwargs.setdefault("fmt", "%(levelname)s %(name)s %(message)s")
        kwargs.setdefault("rename_fields", dict(_RENAMES))
        # Compact, as the default path's lines are (orjson writes no spaces).
        kwargs.setdefault("json_serializer", _compact_dumps)
        super().__init__(**kwargs)
        self._encoder = JsonEncoder(ensure_ascii=True)
        self._encode = _one_shot_encoder(self._encoder.default)
        # (whole second, its text): the date and time part changes once a second.
        self._second: tuple[int, str] = (-1, "")
        # A record's keys -> those of them that are fields, in order.
        self._fields_of: dict[tuple[str, ...], tuple[str, ...]] = {}

    def format(self, record: logging.LogRecord) -> str:
        if not self._fast or isinstance(record.msg, dict):
            return super().format(record)
        msg = record.msg  # a plain message needs no getMessage() call
        data: dict[str, Any] = {
            "timestamp": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": msg if type(msg) is str and not record.args else record.getMessage(),
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        values = record.__dict__
        # Which of a record's attributes are fields depends on its keys alone, and records
        # come in few shapes (each event of the log layer, each ``extra=`` a call site passes):
        # decided once per shape, then copied without a test per key.
        shape = tuple(values)
        fields = self._fields_of.get(shape)
        if fields is None:
            if len(self._fields_of) >= _MAX_SHAPES:
                self._fields_of.clear()
            fields = self._fields_of[shape] = tuple(
                key for key in shape if key not in _SKIP and key[:1] != "_"
            )
        for key in fields:
            data[key] = values[key]
        return self._encode(data)

    def _timestamp(self, created: float) -> str:
        """``datetime.fromtimestamp(created, utc).isoformat()``, always with microseconds."""
        whole = int(created)
        micro = int((created - whole) * 1e6 + 0.5)
        if micro >= 1_000_000:
            whole, micro = whole + 1, 0
        second = self._second
        if second[0] != whole:
            text = datetime.fromtimestamp(whole, tz=_UTC).strftime("%Y-%m-%dT%H:%M:%S.")
            self._second = second = (whole, text)
        return f"{second[1]}{micro:06d}+00:00"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        # Set first so it leads the line, where people and tools look for it.
        # As text already: the encoder would otherwise call back into Python for a datetime.
        log_data["timestamp"] = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat()
        super().add_fields(log_data, record, message_dict)


def _compact_dumps(data: Any, **kwargs: Any) -> str:
    return json.dumps(data, separators=(",", ":"), **kwargs)


def _one_shot_encoder(default: Any) -> Callable[[dict[str, Any]], str]:
    """What ``json.dumps(data, default=default, separators=(",", ":"))`` does, in a tenth of
    the time: orjson encodes a ``job.done`` line in about 0.3 us where the stdlib's C encoder
    takes 2.6 us, on every attempt. Lines stay ASCII, as with python-json-logger's default
    ``ensure_ascii``: one with other characters, or a value orjson refuses (an int past 64
    bits, a dict whose keys are not strings), goes through the stdlib's C encoder, made once
    (it keeps no state between calls, as no circular check is asked of it: a record whose
    field contains itself fails to format and is reported by ``logging``, as
    python-json-logger's check would)."""
    # Not in typeshed: the C accelerator behind json.dumps.
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    stdlib: Callable[[dict[str, Any]], str]
    if c_make_encoder is None:  # pragma: no cover - CPython always has it
        stdlib = json.JSONEncoder(
            default=default, check_circular=False, separators=(",", ":")
        ).encode
    else:
        encoder = c_make_encoder(
            None, default, encode_basestring_ascii, None, ":", ",", False, False, True
        )

        def c_encode(data: dict[str, Any]) -> str:
            chunks: tuple[str, ...] = encoder(data, 0)
            return "".join(chunks)

        stdlib = c_encode

    dumps = orjson.dumps

    def encode(data: dict[str, Any]) -> str:
        # No OPT_NON_STR_KEYS: it costs every line a third more, and the rare dict with other
        # keys is refused and goes to the stdlib, which writes those keys as strings.
        try:
            line = dumps(data, default=default).decode()
        except TypeError:  # orjson.JSONEncodeError is one
            return stdlib(data)
        return line if line.isascii() else stdlib(data)

    return encode


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
