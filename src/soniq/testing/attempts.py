"""One attempt of a job the kit holds, run in the test's own loop through the app's real chain.

The worker builds an :class:`~soniq.context.AttemptContext` from a claimed row and calls the
composed chain (telemetry layers, the user's middlewares, the hooks, the job); this does the
same from an :class:`EnqueuedJob`, with no database: the arguments are decoded from the JSON
text the enqueue produced, as a worker decodes them from the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .. import clock
from ..attempts import stored_result
from ..context import AttemptContext, current_attempt
from ..executor import JobExecutor
from ..middleware import PendingJob
from ..registry import JobSpec
from .outcomes import OUTCOME_NAMES, Outcome

#: The ``worker_id`` jobs see when the kit runs them.
WORKER_ID = "soniq.testing"


@dataclass(eq=False)
class EnqueuedJob:
    """A job an enqueue wrote while the kit held it instead of the database."""

    id: str
    spec: JobSpec
    queue: str
    priority: int
    #: The arguments as the database would store them (JSON text).
    args_json: str
    enqueued_at: datetime
    #: When the job (or its next attempt) comes due, on :mod:`soniq.clock`'s time.
    scheduled_at: datetime
    trace_context: dict[str, str] | None
    #: The job that was running when this one was enqueued, if any.
    enqueued_by: str | None
    seq: int
    #: Attempts used so far.
    attempts: int = 0

    @classmethod
    def from_pending(cls, job: PendingJob, now: datetime, seq: int) -> EnqueuedJob:
        # The same rule as the INSERT: an absolute time wins, else now plus the delay.
        due = job.scheduled_at if job.scheduled_at is not None else now
        if job.scheduled_at is None and job.delay_s:
            due = now + timedelta(seconds=job.delay_s)
        parent = current_attempt.get()
        return cls(
            id=job.id,
            spec=job.spec,
            queue=job.queue,
            priority=job.priority,
            args_json=job.args_json,
            enqueued_at=now,
            scheduled_at=due,
            trace_context=dict(job.trace_context) if job.trace_context else None,
            enqueued_by=None if parent is None else parent.job_name,
            seq=seq,
        )

    @property
    def job_name(self) -> str:
        return self.spec.name

    @property
    def args(self) -> dict[str, Any]:
        """The arguments as a job receives them: decoded from the stored JSON."""
        decoded: dict[str, Any] = json.loads(self.args_json)
        return decoded

    @property
    def delay(self) -> float:
        """Seconds from the enqueue to the time the job was due (0 for a job ready at once)."""
        return (self.scheduled_at - self.enqueued_at).total_seconds()

    def due(self, now: datetime) -> bool:
        return self.scheduled_at <= now

    def __str__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args.items())
        where = f"queue={self.queue!r}"
        if self.priority:
            where += f" priority={self.priority}"
        if self.delay > 0:
            where += f" scheduled_in={self.delay:g}s"
        return f"{self.job_name}({args}) {where}"


class AttemptRunner:
    """Runs attempts through the app's chain, as the chain compiles it around the executor."""

    def __init__(self, app: Any) -> None:
        self.app = app
        settings = app.settings
        self._executor = JobExecutor(settings.thread_pool_size or settings.concurrency)

    async def run(self, job: EnqueuedJob) -> Outcome:
        """Run the job's next attempt; the job's attempts and trace context are updated."""
        job.attempts += 1
        now = clock.now()
        ctx = AttemptContext(
            job_id=job.id,
            job_name=job.spec.name,
            queue=job.queue,
            attempt=job.attempts,
            max_attempts=job.spec.max_attempts,
            priority=job.priority,
            args=job.args,
            enqueued_at=job.enqueued_at,
            scheduled_at=job.scheduled_at,
            queue_wait_s=max(0.0, (now - job.scheduled_at).total_seconds()),
            worker_id=WORKER_ID,
            spec=job.spec,
            trace_context=dict(job.trace_context) if job.trace_context else None,
        )
        try:
            result = await self.app.middleware.job_call(self._executor)(ctx)
        except Exception as exc:
            if ctx.outcome is None or ctx.error is not exc:
                ctx.settle_failure(exc)
            # Tracing leaves the failed attempt's span context for the next attempt to link.
            job.trace_context = ctx.trace_context
            return outcome_of(ctx, error=exc)
        return outcome_of(ctx, result=result)

    def close(self) -> None:
        self._executor.shutdown()


def outcome_of(
    ctx: AttemptContext, *, result: Any = None, error: Exception | None = None
) -> Outcome:
    """The :class:`Outcome` of an attempt the chain has settled."""
    settled: Any = ctx.outcome if ctx.outcome in OUTCOME_NAMES else "done"
    if error is not None and settled == "done":
        settled = "dead_letter" if ctx.final else "retry"
    return Outcome(
        job_name=ctx.job_name,
        job_id=ctx.job_id,
        attempt=ctx.attempt,
        outcome=settled,
        result=None if error is not None else _as_stored(ctx, result),
        error=error,
        queue=ctx.queue,
        args=ctx.args,
        retry_delay=ctx.retry_delay if settled != "done" else None,
        func=ctx.spec.func,
    )


def _as_stored(ctx: AttemptContext, result: Any) -> Any:
    """The result as the database would keep it: through JSON, or dropped (with the worker's
    warning) when it is not JSON."""
    stored = stored_result(ctx, result)
    return None if stored is None else json.loads(stored)
