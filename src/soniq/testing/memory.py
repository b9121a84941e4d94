"""Jobs held in memory instead of the database, run on demand: what inline and capture share.

Entering a mode swaps the app's enqueue writer (``app.writer``) for :meth:`HeldJobs.write`, so
an enqueue still passes through every enqueue middleware (tracing's ``send`` span, the user's
own) and only the final write is replaced. Running takes the due jobs in the worker's order
(priority, due time, enqueue order) and runs each through :class:`AttemptRunner`.
"""

from __future__ import annotations

import contextvars
import itertools
from collections import Counter
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .. import clock
from ..errors import ConfigurationError
from ..middleware import EnqueueContext
from .attempts import AttemptRunner, EnqueuedJob
from .outcomes import DrainLimitExceeded, Outcome, Outcomes

if TYPE_CHECKING:
    from ..app import Soniq

#: Attempts one drain (or one inline enqueue) may run before it stops and says why.
DEFAULT_MAX_RUNS = 1000

# The held jobs being run in this task right now: an enqueue from inside a job they run adds
# to them instead of starting a run of its own.
_running: contextvars.ContextVar[HeldJobs | None] = contextvars.ContextVar(
    "soniq_testing_running", default=None
)


class HeldJobs:
    """Base of :class:`~soniq.testing.InlineRun` and :class:`~soniq.testing.CapturedJobs`."""

    mode = "held"

    def __init__(self, app: Soniq) -> None:
        self.app = app
        #: Every job enqueued while the mode was on, in order, run or not.
        self.all: list[EnqueuedJob] = []
        #: Jobs not run to the end yet: delayed, waiting for a retry, or not drained.
        self.pending: list[EnqueuedJob] = []
        #: Every attempt run so far, in order.
        self.outcomes = Outcomes()
        self._runner: AttemptRunner | None = None
        self._seq = itertools.count()

    # -- the mode --------------------------------------------------------------------------
    def __enter__(self) -> Any:
        current = self.app.writer
        owner = getattr(current, "__self__", None)
        if isinstance(owner, HeldJobs):
            raise ConfigurationError(
                f"soniq.testing.{self.mode}() on an app already under soniq.testing."
                f"{owner.mode}(); leave that block first (one mode per app at a time)"
            )
        self._runner = AttemptRunner(self.app)
        self.app.writer = self.write
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.app.writer = None
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    # -- the writer ------------------------------------------------------------------------
    async def write(self, ctx: EnqueueContext) -> None:
        """Hold the jobs instead of storing them."""
        if ctx.connection is not None:
            raise ConfigurationError(
                f"enqueue(..., connection=...) under soniq.testing.{self.mode}(): this mode "
                f"writes nothing to the database, so there is no transaction to join and a "
                f"rollback could not undo the enqueue. Test transactional enqueues against a "
                f"real database: the soniq_database fixture and `await soniq.testing.drain(app)`"
            )
        now = clock.now()
        for pending in ctx.jobs:
            job = EnqueuedJob.from_pending(pending, now, next(self._seq))
            self.all.append(job)
            self.pending.append(job)

    # -- running ---------------------------------------------------------------------------
    def _next_due(self, with_scheduled: bool) -> EnqueuedJob | None:
        now = clock.now()
        due = [j for j in self.pending if with_scheduled or j.due(now)]
        if not due:
            return None
        return min(due, key=lambda j: (j.priority, j.scheduled_at, j.seq))

    async def _run_due(
        self, *, with_scheduled: bool, retry_at_once: bool, max_runs: int
    ) -> Outcomes:
        if self._runner is None:
            raise RuntimeError(
                f"soniq.testing.{self.mode}() is not active; run jobs inside its `with` block"
            )
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise ConfigurationError(f"max_runs must be an int >= 1, not {max_runs!r}")
        ran = Outcomes()
        token = _running.set(self)
        try:
            while (job := self._next_due(with_scheduled)) is not None:
                if len(ran) >= max_runs:
                    raise DrainLimitExceeded(self._limit_message(ran, max_runs))
                self.pending.remove(job)
                while True:
                    outcome = await self._runner.run(job)
                    ran.append(outcome)
                    self.outcomes.append(outcome)
                    if not self._hold_again(job, outcome, retry_at_once):
                        break
                    at_once = retry_at_once and outcome.outcome == "retry"
                    if not at_once or len(ran) >= max_runs:
                        self.pending.append(job)  # due when _hold_again said
                        break
        finally:
            _running.reset(token)
        return ran

    @staticmethod
    def _hold_again(job: EnqueuedJob, outcome: Outcome, at_once: bool) -> bool:
        """Whether the job has another attempt coming, and when (as the worker writes it)."""
        if outcome.outcome not in ("retry", "snoozed"):
            return False
        delay = 0.0 if at_once and outcome.outcome == "retry" else outcome.retry_delay or 0.0
        job.scheduled_at = clock.now() + timedelta(seconds=delay)
        return True

    def _limit_message(self, ran: Outcomes, max_runs: int) -> str:
        coming = Counter(
            f"{j.job_name} (enqueued by {j.enqueued_by or 'the test'})" for j in self.pending
        )
        busiest = ", ".join(f"{name} x{n}" for name, n in coming.most_common(3))
        return (
            f"soniq.testing.{self.mode}: ran {len(ran)} attempts (max_runs={max_runs}) and jobs "
            f"are still coming: {busiest}. A job that enqueues itself, or a cycle of jobs "
            f"enqueueing each other, never lets a drain end; if that many jobs are expected, "
            f"pass a larger max_runs"
        )

    def _inside_run(self) -> bool:
        return _running.get() is self
