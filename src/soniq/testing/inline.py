"""Inline mode: each enqueue runs its job at once, in the caller's loop, with no database.

``with soniq.testing.inline(app) as run:`` and then ``await app.enqueue(...)`` returns only
after the job has run through the real chain (telemetry layers, middlewares, hooks), with its
arguments decoded from the JSON the enqueue produced. A failed attempt is retried at once up to
the job's attempts. Jobs a running job enqueues run right after it, before the enqueue returns.
A delayed job is held until it comes due (``soniq.testing.Clock.advance``) and then runs at
the next enqueue or ``await run.drain()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..middleware import EnqueueContext
from .attempts import EnqueuedJob
from .memory import DEFAULT_MAX_RUNS, HeldJobs
from .outcomes import Outcomes

if TYPE_CHECKING:
    from ..app import Soniq


class InlineRun(HeldJobs):
    """What :func:`inline` yields: ``outcomes`` of every attempt run, ``scheduled`` jobs held
    for later, and :meth:`drain` for those once they are due."""

    mode = "inline"

    def __init__(self, app: Soniq, *, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        super().__init__(app)
        self.max_runs = max_runs

    def __enter__(self) -> InlineRun:
        super().__enter__()
        return self

    async def write(self, ctx: EnqueueContext) -> None:
        await super().write(ctx)
        if not self._inside_run():  # from inside a job: runs after it, in the same run
            await self._run_due(with_scheduled=False, retry_at_once=True, max_runs=self.max_runs)

    @property
    def scheduled(self) -> list[EnqueuedJob]:
        """Delayed jobs not due yet (advance the clock, then :meth:`drain`)."""
        return list(self.pending)

    async def drain(self, *, with_scheduled: bool = False, max_runs: int | None = None) -> Outcomes:
        """Run the held jobs that are due (all of them with ``with_scheduled``)."""
        return await self._run_due(
            with_scheduled=with_scheduled,
            retry_at_once=True,
            max_runs=self.max_runs if max_runs is None else max_runs,
        )


def inline(app: Soniq, *, max_runs: int = DEFAULT_MAX_RUNS) -> InlineRun:
    """Run every job enqueued on ``app`` at once, in the enqueuing loop (a ``with`` block).

    ``max_runs`` bounds the attempts one enqueue may set off (jobs that keep enqueuing jobs);
    past it the enqueue raises :class:`~soniq.testing.DrainLimitExceeded`.
    """
    return InlineRun(app, max_runs=max_runs)
