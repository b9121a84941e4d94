"""Draining a real database: every ready job runs in the test's loop, outcomes come back.

``await soniq.testing.drain(app)`` runs a worker with ``run_once`` (the real claim, chain and
recording) until no job is ready, again while the jobs it ran enqueued more. A recording layer,
outermost in the chain for the drain's duration, sees each attempt's settled fate; it is a
telemetry layer, so nothing it does can fail a job.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from ..context import AttemptContext, current_attempt
from ..errors import ConfigurationError
from ..middleware import CallNext, EnqueueContext, EnqueueNext, Middleware
from .attempts import outcome_of
from .memory import DEFAULT_MAX_RUNS, HeldJobs
from .outcomes import DrainLimitExceeded, Outcomes

if TYPE_CHECKING:
    from ..app import Soniq
    from ..worker import Worker


class OutcomeRecorder(Middleware):
    """Collects the outcome of every attempt (and who enqueued what) while a drain runs."""

    telemetry = True
    order = 0  # outside every other layer: sees the fate they all saw

    def __init__(self, max_runs: int) -> None:
        self.max_runs = max_runs
        self.outcomes = Outcomes()
        self.enqueued: Counter[str] = Counter()
        self.stopped_at_limit = False
        self._worker: Worker | None = None

    @property
    def key(self) -> object:
        return self

    def __repr__(self) -> str:
        return "OutcomeRecorder()"

    async def startup(self, worker: Worker) -> None:
        self._worker = worker

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            result = await call_next(ctx)
        except Exception as exc:
            self._record(ctx, error=exc)
            raise
        self._record(ctx, result=result)
        return result

    def _record(self, ctx: AttemptContext, **what: Any) -> None:
        self.outcomes.append(outcome_of(ctx, **what))
        if len(self.outcomes) >= self.max_runs and self._worker is not None:
            self.stopped_at_limit = True
            self._worker.stop()

    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        await call_next(ctx)
        parent = current_attempt.get()
        by = "the test" if parent is None else parent.job_name
        for job in ctx.jobs:
            self.enqueued[f"{job.job_name} (enqueued by {by})"] += 1


async def drain(
    app: Soniq,
    *,
    queues: list[str] | None = None,
    concurrency: int | None = None,
    max_runs: int = DEFAULT_MAX_RUNS,
) -> Outcomes:
    """Run every ready job of ``app``'s database (of ``queues``, if given) in this loop, and
    the jobs they enqueue, until none is ready; returns the outcomes of the attempts.

    Delayed jobs and retries run once they are due (advance a :class:`~soniq.testing.Clock`
    attached to the app). Past ``max_runs`` attempts with jobs still ready it raises
    :class:`~soniq.testing.DrainLimitExceeded`.
    """
    if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
        raise ConfigurationError(f"max_runs must be an int >= 1, not {max_runs!r}")
    held = getattr(app.writer, "__self__", None)
    if isinstance(held, HeldJobs):
        raise ConfigurationError(
            f"soniq.testing.drain(app) runs the jobs in the database, but this app is under "
            f"soniq.testing.{held.mode}(), which keeps its jobs in memory: use "
            f"`await {'run' if held.mode == 'inline' else 'jobs'}.drain()` of that block instead"
        )
    if any(isinstance(layer, OutcomeRecorder) for layer in app.middleware):
        raise ConfigurationError(
            "soniq.testing.drain(app) is already running on this app; await the first one"
        )
    recorder = OutcomeRecorder(max_runs)
    app.middleware.add_builtin(recorder)
    try:
        while True:
            before = len(recorder.outcomes)
            worker = app.worker(
                concurrency=concurrency,
                queues=queues,
                run_once=True,
                install_signal_handlers=False,
            )
            await worker.run()
            if recorder.stopped_at_limit:
                if await _ready_jobs(app, queues):
                    raise DrainLimitExceeded(_limit_message(recorder))
                break
            # A run_once worker stops when its last claim came back short, so jobs enqueued
            # by the last jobs it ran may still wait: go again until a run finds nothing.
            if len(recorder.outcomes) == before:
                break
    finally:
        app.middleware.remove(recorder)
    return recorder.outcomes


async def _ready_jobs(app: Soniq, queues: list[str] | None) -> int:
    status = await app.queue_status()
    return sum(int(row["ready"]) for row in status if queues is None or row["queue"] in queues)


def _limit_message(recorder: OutcomeRecorder) -> str:
    busiest = ", ".join(f"{what} x{n}" for what, n in recorder.enqueued.most_common(3))
    return (
        f"soniq.testing.drain: ran {len(recorder.outcomes)} attempts "
        f"(max_runs={recorder.max_runs}) and jobs are still ready"
        + (f"; enqueued meanwhile: {busiest}" if busiest else "")
        + ". A job that enqueues itself, or a cycle of jobs enqueueing each other, never lets "
        "a drain end; if that many jobs are expected, pass a larger max_runs"
    )
