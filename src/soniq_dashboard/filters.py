"""Reading a page's filters from its URL, with a clear 400 for anything malformed.

Each problem names the parameter, the value given and what would be accepted, so a mistyped
link shows a page that says what to fix (never a stack trace).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.datastructures import QueryParams

from soniq import JobStatus

STATES: tuple[str, ...] = tuple(s.value for s in JobStatus)
MAX_PAGE = 200


class BadFilter(ValueError):
    """A URL parameter the dashboard cannot use; the message is shown on a 400 page."""


@dataclass
class JobFilters:
    queue: str | None = None
    status: list[str] = field(default_factory=list)
    job_name: str | None = None
    args_contains: dict[str, Any] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = 50
    # Keyset cursor: the creation time and id of the last job on the previous page.
    after: tuple[datetime, str] | None = None

    @property
    def args_text(self) -> str:
        import json

        return json.dumps(self.args_contains) if self.args_contains else ""

    def api_filters(self) -> dict[str, Any]:
        """The filters as keyword arguments of ``app.list_jobs`` / ``app.bulk_jobs``."""
        out: dict[str, Any] = {}
        if self.queue:
            out["queue"] = self.queue
        if self.status:
            out["status"] = self.status if len(self.status) > 1 else self.status[0]
        if self.job_name:
            out["job_name"] = self.job_name
        if self.args_contains:
            out["args_contains"] = self.args_contains
        if self.created_after:
            out["created_after"] = self.created_after
        if self.created_before:
            out["created_before"] = self.created_before
        return out

    def query(self, **override: Any) -> str:
        """This filter set as a query string (for links to the next page and forms)."""
        from urllib.parse import urlencode

        pairs: list[tuple[str, str]] = []
        if self.queue:
            pairs.append(("queue", self.queue))
        pairs.extend(("status", s) for s in self.status)
        if self.job_name:
            pairs.append(("job_name", self.job_name))
        if self.args_contains:
            import json

            pairs.append(("args", json.dumps(self.args_contains, separators=(",", ":"))))
        if self.created_after:
            pairs.append(("created_after", self.created_after.isoformat()))
        if self.created_before:
            pairs.append(("created_before", self.created_before.isoformat()))
        pairs.append(("limit", str(self.limit)))
        for key, value in override.items():
            pairs = [p for p in pairs if p[0] != key]
            if value is not None:
                pairs.append((key, str(value)))
        return urlencode(pairs)


def job_filters(params: QueryParams, *, fixed_status: str | None = None) -> JobFilters:
    f = JobFilters()
    f.queue = _text(params, "queue")
    f.job_name = _text(params, "job_name")
    statuses = [s for s in params.getlist("status") if s]
    for s in statuses:
        if s not in STATES:
            raise BadFilter(f"status={s!r} is not a job state; use one of: {', '.join(STATES)}")
    f.status = [fixed_status] if fixed_status else statuses
    raw_args = _text(params, "args")
    if raw_args:
        import json

        try:
            value = json.loads(raw_args)
        except ValueError as exc:
            raise BadFilter(
                f'args={raw_args!r} is not JSON ({exc}); give an object such as {{"customer": 42}}'
            ) from None
        if not isinstance(value, dict):
            raise BadFilter(
                f'args must be a JSON object such as {{"customer": 42}}, not {raw_args!r}'
            )
        f.args_contains = value
    f.created_after = _when(params, "created_after")
    f.created_before = _when(params, "created_before")
    limit = _text(params, "limit")
    if limit:
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_PAGE:
            raise BadFilter(f"limit={limit!r}: give a whole number from 1 to {MAX_PAGE}")
        f.limit = int(limit)
    cursor = _text(params, "after")
    if cursor:
        f.after = parse_cursor(cursor)
    return f


def cursor_of(job: dict[str, Any]) -> str:
    """The URL form of a page's last job, for the link to the next page."""
    return f"{job['created_at'].isoformat()}~{job['id']}"


def parse_cursor(value: str) -> tuple[datetime, str]:
    when, _, jid = value.partition("~")
    try:
        created = datetime.fromisoformat(when)
    except ValueError:
        created = None
    if created is None or created.tzinfo is None or not jid:
        raise BadFilter(
            f"after={value!r} is not a page cursor; follow the page's 'Older jobs' link"
        )
    return created, job_id(jid, what="after")


def job_id(value: str, *, what: str = "job id") -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise BadFilter(
            f"{what} {value!r} is not a job id; job ids are UUIDs such as "
            f"0190b0c4-1f1e-7a3b-9c2d-5e6f7a8b9c0d"
        ) from None


def _text(params: QueryParams, name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    value = value.strip()
    if len(value) > 500:
        raise BadFilter(f"{name} is {len(value)} characters long; at most 500 are accepted")
    return value or None


def _when(params: QueryParams, name: str) -> datetime | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(
            f"{name}={value!r} is not a date and time; use ISO 8601, e.g. 2026-12-05T09:30"
        ) from None
    # A time typed without a zone (the browser's datetime-local input) is taken as UTC, the
    # zone every time on these pages is shown in.
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
