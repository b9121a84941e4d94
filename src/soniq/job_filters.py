"""The filters of ``list_jobs``/``iter_jobs``/``bulk_jobs``, and every input of the managing
API, checked once, here.

Every input is checked before anything reaches the database, and a bad one fails with a
message naming the parameter and the fix (:class:`soniq.errors.ConfigurationError`, a
``ValueError``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ConfigurationError
from .jobs import JobStatus

# The values of the soniq_job_status enum, in a job's life order.
STATUSES: tuple[str, ...] = tuple(s.value for s in JobStatus)

ACTIONS: tuple[str, ...] = ("retry", "cancel", "delete")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs a listing or a bulk action covers. Conditions combine with AND."""

    statuses: tuple[str, ...] = STATUSES
    queue: str | None = None
    job_name: str | None = None
    args_contains: str | None = None  # JSON text, matched with jsonb @>
    created_after: datetime | None = None
    created_before: datetime | None = None

    @property
    def narrows(self) -> bool:
        """Whether anything but the states narrows the jobs (a delete of every job of a state
        is narrowed by the state)."""
        return self.statuses != STATUSES or any(
            v is not None
            for v in (
                self.queue,
                self.job_name,
                self.args_contains,
                self.created_after,
                self.created_before,
            )
        )

    def where(self, first: int, *, byte_order: bool = False) -> tuple[str, list[Any]]:
        """A parameterised conjunction (states apart: the statements write those as literals,
        see sql.list_jobs), numbering parameters from ``$first``. ``byte_order`` compares
        queue and job_name under the "C" collation, the one the queued jobs' listing index
        keys them with (migration 7); equality is the same under any deterministic collation,
        so the rows matched are too."""
        conditions: list[str] = []
        args: list[Any] = []
        collate = ' COLLATE "C"' if byte_order else ""

        def add(template: str, value: Any) -> None:
            args.append(value)
            conditions.append(template.format(f"${first + len(args) - 1}"))

        if self.queue is not None:
            add(f"queue{collate} = {{}}::text", self.queue)
        if self.job_name is not None:
            add(f"job_name{collate} = {{}}::text", self.job_name)
        if self.args_contains is not None:
            add("args @> {}::jsonb", self.args_contains)
        if self.created_after is not None:
            add("created_at >= {}::timestamptz", self.created_after)
        if self.created_before is not None:
            add("created_at < {}::timestamptz", self.created_before)
        return " AND ".join(conditions) or "TRUE", args


def make_filter(
    *,
    queue: str | None = None,
    status: str | Iterable[str] | None = None,
    job_name: str | None = None,
    args_contains: Mapping[str, Any] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> JobFilter:
    """Check the filters the public methods take and build a :class:`JobFilter`."""
    _text("queue", queue)
    _text("job_name", job_name)
    contains: str | None = None
    if args_contains is not None:
        if not isinstance(args_contains, Mapping):
            raise ConfigurationError(
                f"args_contains must be a dict of job arguments to match (e.g. "
                f"{{'user_id': 42}}), not {type(args_contains).__name__}"
            )
        try:
            contains = json.dumps(dict(args_contains), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"args_contains must hold JSON values, as job arguments do: {exc}"
            ) from None
    _aware("created_after", created_after)
    _aware("created_before", created_before)
    if created_after and created_before and created_after >= created_before:
        raise ConfigurationError(
            f"created_after ({created_after.isoformat()}) is not before created_before "
            f"({created_before.isoformat()}); no job can match"
        )
    return JobFilter(
        statuses=parse_statuses(status),
        queue=queue,
        job_name=job_name,
        args_contains=contains,
        created_after=created_after,
        created_before=created_before,
    )


def parse_statuses(status: str | Iterable[str] | None) -> tuple[str, ...]:
    """One state, several (a list, tuple or set; a comma-separated string too, as the CLI
    passes it), or None for every state. Returned in :data:`STATUSES` order."""
    if status is None:
        return STATUSES
    if isinstance(status, str):
        wanted = [s.strip() for s in status.split(",")]
    elif isinstance(status, Iterable):
        wanted = list(status)
    else:
        raise ConfigurationError(
            f"status must be a state name or a list of them, not {type(status).__name__}"
        )
    unknown = [s for s in wanted if s not in STATUSES]
    if unknown:
        raise ConfigurationError(
            f"unknown job status {', '.join(repr(s) for s in unknown)}; use one or several "
            f"of {', '.join(STATUSES)}"
        )
    if not wanted:
        raise ConfigurationError(f"status is empty; give at least one of {', '.join(STATUSES)}")
    return tuple(s for s in STATUSES if s in wanted)


def check_limit(limit: int, offset: int = 0) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"limit must be a whole number of at least 1, not {limit!r}; to go through every "
            f"match use iter_jobs()"
        )
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ConfigurationError(f"offset must be a whole number of at least 0, not {offset!r}")


def check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ConfigurationError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")


def job_id(value: object) -> str:
    """A job id in canonical form, or a clear error (ids are UUIDs, as enqueue returns)."""
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a job id; ids are UUIDs such as the one enqueue() returns "
            f"(e.g. 0190a8f2-7b1c-7d3e-8f00-1234567890ab)"
        ) from None


def _text(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigurationError(f"{name} must be a non-empty string or None, not {value!r}")


def _aware(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, datetime):
        raise ConfigurationError(
            f"{name} must be a timezone-aware datetime, not {type(value).__name__}"
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            f"{name}={value!r} has no timezone; pass an aware datetime, e.g. "
            f"datetime.now(timezone.utc) - timedelta(days=1)"
        )
