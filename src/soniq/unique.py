"""Unique jobs: when two enqueues are the same job, and what the second one does.

A unique job is written with a key (its job name and its arguments, or a key of the user's).
The database holds at most one live row per key (a partial unique index), so the rule holds
across every producer and transaction. A row keeps blocking its key while its status is one of
``states`` and ``within`` has not passed since it was enqueued; the next enqueue that meets a
holder no longer covered takes the key from it (see ``sql_control.INSERT_UNIQUE_JOBS``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from .errors import ConfigurationError, JobArgumentsError
from .jobs import JobStatus

OnConflict = Literal["return_existing", "replace", "raise"]
ON_CONFLICT: tuple[str, ...] = ("return_existing", "replace", "raise")
STATES: tuple[str, ...] = tuple(s.value for s in JobStatus)


@dataclass(frozen=True)
class Unique:
    """How a job is deduplicated; ``@app.job(unique=Unique(...))``.

    - ``key``: None dedupes on the arguments; a callable gets the arguments (a dict) and
      returns the key as a string. Keys are per job name either way.
    - ``states``: while the existing job is in one of these, a new one is a duplicate.
    - ``within``: a duplicate only within this long of the existing job's enqueue (or its
      last replace); None is no limit.
    - ``on_conflict``: ``return_existing`` (the existing id comes back), ``replace`` (a queued
      existing job takes the new arguments and due time; debounce), or ``raise``
      (:class:`soniq.DuplicateJob`).
    """

    key: Callable[[dict[str, Any]], str] | None = None
    states: tuple[str, ...] = ("queued", "processing")
    within: timedelta | float | None = None
    on_conflict: OnConflict = "return_existing"
    within_s: float | None = field(init=False, repr=False, compare=False)
    states_literal: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.on_conflict not in ON_CONFLICT:
            raise ConfigurationError(
                f"Unique(on_conflict={self.on_conflict!r}): use one of "
                f"{', '.join(repr(c) for c in ON_CONFLICT)}"
            )
        states = (self.states,) if isinstance(self.states, str) else self.states
        try:
            states = tuple(states)
        except TypeError:
            raise ConfigurationError(
                f"Unique(states={self.states!r}): give a tuple of job statuses, e.g. "
                f"('queued', 'processing')"
            ) from None
        unknown = [s for s in states if s not in STATES]
        if unknown or not states:
            raise ConfigurationError(
                f"Unique(states={self.states!r}): "
                + (f"unknown status {unknown[0]!r}; " if unknown else "no status given; ")
                + f"use some of {', '.join(repr(s) for s in STATES)}"
            )
        if self.key is not None and not callable(self.key):
            raise ConfigurationError(
                f"Unique(key={self.key!r}): give a function of the job's arguments (a dict) "
                f"returning a string, or None to dedupe on the arguments; for one enqueue's own "
                f"key pass enqueue(..., dedup_key='...')"
            )
        within = self.within
        if isinstance(within, timedelta):
            within = within.total_seconds()
        if within is not None and (
            isinstance(within, bool)
            or not isinstance(within, (int, float))
            or not math.isfinite(within)
            or within <= 0
        ):
            raise ConfigurationError(
                f"Unique(within={self.within!r}): give a positive timedelta or number of "
                f"seconds, or None for no time limit"
            )
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "within_s", None if within is None else float(within))
        object.__setattr__(self, "states_literal", "{" + ",".join(states) + "}")


def as_unique(value: object) -> Unique | None:
    """The ``unique=`` job option: True dedupes while a job is queued, as the public Soniq."""
    if value is None or value is False:
        return None
    if value is True:
        return Unique(states=("queued",))
    if isinstance(value, Unique):
        return value
    raise ConfigurationError(
        f"unique={value!r}: give True (dedupe on name and arguments while queued) or "
        f"soniq.Unique(...)"
    )


@dataclass(eq=False, slots=True)
class UniqueKey:
    """One pending job's key and rule, as written with it."""

    key: str
    rule: Unique


def key_for(
    job_name: str, rule: Unique, kwargs: dict[str, Any], dedup_key: str | None
) -> UniqueKey:
    """The stored key: the job name (length-prefixed, so no name and key pair can collide with
    another) and the caller's key, the rule's key function's, or a digest of the arguments."""
    if dedup_key is not None:
        if not isinstance(dedup_key, str) or not dedup_key:
            raise JobArgumentsError(f"dedup_key must be a non-empty string, not {dedup_key!r}")
        own = dedup_key
    elif rule.key is not None:
        own = rule.key(kwargs)
        if not isinstance(own, str) or not own:
            raise JobArgumentsError(
                f"Job {job_name!r}: its Unique key function returned {own!r}; it must return a "
                f"non-empty string"
            )
    else:
        canonical = json.dumps(kwargs, sort_keys=True, separators=(",", ":"), default=str)
        own = "args:" + hashlib.sha256(canonical.encode()).hexdigest()
    return UniqueKey(f"{len(job_name)}:{job_name}:{own}", rule)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What ``app.enqueue_result`` wrote: the job's id (the existing job's, when deduplicated),
    whether it was deduplicated, and whether it replaced the existing job's arguments."""

    id: str
    deduplicated: bool = False
    replaced: bool = False
