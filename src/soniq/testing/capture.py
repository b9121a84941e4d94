"""Capture mode: enqueues are recorded, not written; tests assert on them and drain them.

``with soniq.testing.capture(app) as jobs:`` records every enqueue (after the enqueue
middlewares ran, as the database would have received it). ``jobs.assert_enqueued(...)`` checks
one was made; ``await jobs.drain()`` runs the due ones through the real chain, and the jobs they
enqueue in turn. Retries wait out their backoff on :mod:`soniq.clock`'s time, as they would in
the database: advance a :class:`~soniq.testing.Clock`, or drain ``with_scheduled=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .attempts import EnqueuedJob
from .memory import DEFAULT_MAX_RUNS, HeldJobs
from .outcomes import Outcomes

if TYPE_CHECKING:
    from ..app import Soniq

# How far a job's delay may be from ``scheduled_in`` and still match: the delay is measured
# from the enqueue, and a test computes its expectation a moment before or after.
SCHEDULE_TOLERANCE = 1.0


class CapturedJobs(HeldJobs):
    """What :func:`capture` yields: ``all`` jobs enqueued, assertions on them, and drain."""

    mode = "capture"

    def __enter__(self) -> CapturedJobs:
        super().__enter__()
        return self

    async def drain(
        self, *, with_scheduled: bool = False, max_runs: int = DEFAULT_MAX_RUNS
    ) -> Outcomes:
        """Run every job that is due, and the jobs they enqueue, until none is due.

        ``with_scheduled``: run delayed jobs and retries too, whenever they are due. Past
        ``max_runs`` attempts it raises :class:`~soniq.testing.DrainLimitExceeded`.
        """
        return await self._run_due(
            with_scheduled=with_scheduled, retry_at_once=False, max_runs=max_runs
        )

    # -- assertions ------------------------------------------------------------------------
    def enqueued(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        scheduled_in: float | timedelta | None = None,
        **args: Any,
    ) -> list[EnqueuedJob]:
        """The enqueues of ``job`` that match: the arguments given must be equal (others are
        ignored), and the queue and delay if given."""
        name = self.app._spec_of(job).name
        wanted = {key: _as_stored(value) for key, value in args.items()}
        if isinstance(scheduled_in, timedelta):
            scheduled_in = scheduled_in.total_seconds()
        found = []
        for j in self.all:
            if j.job_name != name or (queue is not None and j.queue != queue):
                continue
            if scheduled_in is not None and abs(j.delay - scheduled_in) > SCHEDULE_TOLERANCE:
                continue
            have = j.args
            if all(key in have and have[key] == value for key, value in wanted.items()):
                found.append(j)
        return found

    def assert_enqueued(
        self,
        job: str | Callable[..., Any],
        *,
        queue: str | None = None,
        scheduled_in: float | timedelta | None = None,
        **args: Any,
    ) -> EnqueuedJob:
        """Fail unless ``job`` was enqueued with these arguments (and queue, delay); returns
        the first match. The failure lists what was enqueued instead."""
        found = self.enqueued(job, queue=queue, scheduled_in=scheduled_in, **args)
        if found:
            return found[0]
        expected = _describe(self.app._spec_of(job).name, args, queue, scheduled_in)
        raise AssertionError(f"Expected an enqueue of {expected}; {self._instead()}")

    def assert_not_enqueued(self, job: str | Callable[..., Any], **args: Any) -> None:
        """Fail if ``job`` was enqueued (with these arguments, if given), listing the enqueues."""
        found = self.enqueued(job, **args)
        if found:
            listed = "\n".join(f"  - {j}" for j in found)
            name = _describe(self.app._spec_of(job).name, args, None, None)
            raise AssertionError(f"Expected no enqueue of {name}; found {len(found)}:\n{listed}")

    def _instead(self) -> str:
        if not self.all:
            return "nothing was enqueued"
        listed = "\n".join(f"  - {j}" for j in self.all)
        return f"enqueued instead ({len(self.all)}):\n{listed}"


def capture(app: Soniq) -> CapturedJobs:
    """Record the jobs enqueued on ``app`` instead of writing them (a ``with`` block)."""
    return CapturedJobs(app)


def _as_stored(value: Any) -> Any:
    """An expected argument as the job would get it back (a tuple comes back a list)."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return value


def _describe(
    name: str, args: dict[str, Any], queue: str | None, scheduled_in: float | timedelta | None
) -> str:
    text = f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})"
    if queue is not None:
        text += f" on queue {queue!r}"
    if scheduled_in is not None:
        seconds = (
            scheduled_in.total_seconds() if isinstance(scheduled_in, timedelta) else scheduled_in
        )
        text += f" scheduled in {seconds:g}s"
    return text
