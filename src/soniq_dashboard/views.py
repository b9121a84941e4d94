"""What the pages show of a job: redacted arguments, timings kept apart, and its trace link.

Run time is ``finished_at - started_at`` and queue wait ``started_at - scheduled_at``; they are
never added together (a "processing time" that counts the wait is what other dashboards get
wrong).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

NONE = "\u2013"  # an en dash: shown where a value does not apply

#: ``redact(job_name, args) -> args``: what the dashboard shows of a job's arguments.
Redactor = Callable[[str, dict[str, Any]], dict[str, Any]]


def trace_id(trace_context: Mapping[str, Any] | str | None) -> str | None:
    """The W3C trace id in a stored trace context (its ``traceparent``), if any."""
    if isinstance(trace_context, str):
        try:
            trace_context = json.loads(trace_context)
        except ValueError:
            return None
    if not isinstance(trace_context, Mapping):
        return None
    parent = trace_context.get("traceparent")
    if not isinstance(parent, str):
        return None
    parts = parent.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or set(parts[1]) == {"0"}:
        return None
    try:
        int(parts[1], 16)
    except ValueError:
        return None
    return parts[1]


def trace_link(template: str | None, trace_context: Any) -> str | None:
    tid = trace_id(trace_context)
    if not template or tid is None:
        return None
    return template.replace("{trace_id}", tid)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def when(value: datetime | None) -> str:
    return NONE if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def shown_args(redact: Redactor | None, job: Mapping[str, Any]) -> str:
    args = job.get("args") or {}
    if redact is not None:
        try:
            args = redact(str(job.get("job_name")), dict(args))
        except Exception:  # a broken redactor must hide, not leak
            return "(hidden: the redact function failed)"
    return json.dumps(args, indent=2, sort_keys=True, default=str)


def shown_result(job: Mapping[str, Any]) -> str | None:
    if job.get("result") is None:
        return None
    return json.dumps(job["result"], indent=2, sort_keys=True, default=str)
