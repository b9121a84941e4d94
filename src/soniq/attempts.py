"""One attempt, for :class:`soniq.worker.Worker`: start a claimed job, run it through the
middleware chain, and turn how it ended into the finish record the next round trip writes.

A mixin, as :mod:`soniq.management` is for the app: these methods share the worker's state
(its running tasks and their contexts, the finish records not yet written, the starts not yet
written, the jobs held by threads that outlive their attempt) with the claim loop in
:mod:`soniq.worker`, the stop in :mod:`soniq.worker_stop` and job control in
:mod:`soniq.worker_control`. Outcome to stored status is :func:`soniq.jobs.status_after`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any

from .context import AttemptContext
from .control import Snooze
from .jobs import ClaimedJob, FinishedAttempt, JobStatus, Outcome
from .registry import compact_json

if TYPE_CHECKING:
    from .app import Soniq
    from .claim_ahead import ClaimAhead
    from .executor import JobExecutor
    from .middleware import CallNext
    from .worker_control import JobControl

logger = logging.getLogger("soniq")

_DONE = JobStatus.DONE
_CANCELLED = JobStatus.CANCELLED
_SNOOZE_OUTCOMES = (Outcome.SNOOZED, Outcome.DEAD_LETTER)  # dead letter: past max_snoozes


class RunsAttempts:
    """The attempt methods of :class:`soniq.worker.Worker`; the worker sets the state below."""

    app: Soniq
    id: str
    _executor: JobExecutor
    _call: CallNext  # the compiled chain around the executor
    _control: JobControl
    _ahead: ClaimAhead
    _running: dict[str, asyncio.Task[None]]
    _contexts: dict[str, AttemptContext]  # of the running jobs
    _finished: list[FinishedAttempt]
    _unreported: dict[str, int]
    _held: set[str]
    _wake: asyncio.Event

    if TYPE_CHECKING:  # the loop's, in soniq.worker: an ending attempt frees a slot

        def _fill_slots(self) -> None: ...

    def _start(self, job: ClaimedJob, claimed_at: float) -> None:
        spec = self.app.registry.find(job.job_name)
        job_id = job.id
        if spec is None:  # registry shrank at run time; put it back untouched
            self._unreported.pop(job_id, None)
            self._finished.append(FinishedAttempt.put_back(job_id, job.attempt))
            return
        self._ahead.started(job.start_written_first)
        waited = job.queue_wait_s + (asyncio.get_running_loop().time() - claimed_at)
        ctx = AttemptContext(
            job_id=job_id,
            job_name=spec.name,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            priority=job.priority,
            args=json.loads(job.args),
            enqueued_at=job.created_at,
            scheduled_at=job.scheduled_at,
            queue_wait_s=max(0.0, waited),
            worker_id=self.id,
            spec=spec,
            trace_context=json.loads(job.trace_context) if job.trace_context else None,
            revived=job.revived,
            schedule=job.schedule_name,
            fire_time=job.fire_time,
            snoozes=job.snoozes,
        )
        if self._control.cancelled_early(job_id):
            self._record(FinishedAttempt(job_id, _CANCELLED, refund=1, attempt=job.attempt))
            return
        self._contexts[job_id] = ctx
        self._running[job_id] = asyncio.create_task(self._attempt(ctx), name=f"soniq-{job_id}")

    async def _attempt(self, ctx: AttemptContext) -> None:
        try:
            result = await self._call(ctx)
        except asyncio.CancelledError:
            if ctx.cancel_requested:  # app.cancel_job: it ends cancelled, never to run again
                self._record(FinishedAttempt(ctx.job_id, _CANCELLED, attempt=ctx.attempt))
                return
            # Otherwise shutdown cancelled it: the job goes back without using up an attempt.
            if ctx.job_id in self._executor.busy_threads:
                self._held.add(ctx.job_id)  # its thread runs on; see _flush_final
            else:
                self._record(FinishedAttempt.put_back(ctx.job_id, ctx.attempt))
            return
        except Exception as exc:
            if ctx.outcome is None or ctx.error is not exc:
                ctx.settle_failure(exc)
            if ctx.job_id in self._executor.busy_threads:
                # A timeout ended the attempt but not its thread: until the thread returns, the
                # job stays ours (and beats), so its retry cannot run beside it.
                try:
                    await self._thread_returned(ctx)
                except asyncio.CancelledError:
                    self._held.add(ctx.job_id)  # shutdown meanwhile: see _flush_final
                    raise
            if ctx.cancel_requested:
                self._record(FinishedAttempt(ctx.job_id, _CANCELLED, attempt=ctx.attempt))
            else:
                self._record(FinishedAttempt.failed(ctx, exc))
        else:
            if isinstance(ctx.result, Snooze) and ctx.outcome in _SNOOZE_OUTCOMES:
                await self._control.snooze(ctx, ctx.result)
            elif ctx.cancel_requested:
                self._record(FinishedAttempt(ctx.job_id, _CANCELLED, attempt=ctx.attempt))
            else:
                self._record(
                    FinishedAttempt(
                        ctx.job_id,
                        _DONE,
                        result=stored_result(ctx, result),
                        attempt=ctx.attempt,
                    )
                )
        finally:
            self._contexts.pop(ctx.job_id, None)
            self._running.pop(ctx.job_id, None)
            self._wake.set()
            self._fill_slots()

    async def _thread_returned(self, ctx: AttemptContext) -> None:
        logger.warning(
            "Job %s (%s) timed out, but its thread cannot be stopped; the job is retried or "
            "dead-lettered only once the thread returns",
            ctx.job_name,
            ctx.job_id,
            extra={"event": "job.thread_overrun", "job_id": ctx.job_id, "worker_id": self.id},
        )
        returned = self._executor.busy_threads.get(ctx.job_id)
        if returned is not None:
            await returned.wait()

    def _record(self, finished: FinishedAttempt) -> None:
        self._unreported.pop(finished.id, None)  # the finish record carries the start too
        self._finished.append(finished)


def stored_result(ctx: AttemptContext, result: Any) -> str | None:
    """A job's return value as the database keeps it (compact JSON), or None with a warning
    when it is not JSON: the job still counts as done. The testing kit stores results this way
    too, so a test sees what a worker would keep."""
    if result is None:
        return None
    try:
        return compact_json(result)
    except Exception as exc:  # TypeError, ValueError, RecursionError (too deep) ...
        logger.warning(
            "Job %s (%s) returned a value that cannot be stored as JSON (%s); "
            "the job counts as done and its result is not kept",
            ctx.job_name,
            ctx.job_id,
            exc,
        )
        return None
