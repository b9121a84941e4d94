"""The graceful stop of :class:`soniq.worker.Worker`: running jobs get the grace period, then are
cancelled (their job goes back, attempt refunded); the background tasks end; and a final flush
writes the finish records and starts still owed, retried through a short outage. A job whose
thread (or an attempt that ignores cancellation) outlives the stop stays held by this worker,
its attempt refunded in advance, until the lease returns it after the process has exited.

A mixin, as :mod:`soniq.attempts` is: it shares the worker's state with the claim loop in
:mod:`soniq.worker`, whose round trip it uses for the flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .db_errors import BAD_DATA_ERRORS, CONNECTION_ERRORS
from .jobs import Claim, FinishedAttempt, StartedAttempt

if TYPE_CHECKING:
    from .executor import JobExecutor
    from .worker_control import JobControl
    from .worker_store import WorkerStore

logger = logging.getLogger("soniq")


class StopsGracefully:
    """The stop and final flush of :class:`soniq.worker.Worker`; the worker sets the state
    below."""

    id: str
    grace_period: float
    lease_seconds: float
    _db: WorkerStore
    _executor: JobExecutor
    _control: JobControl
    _stopping: bool
    _running: dict[str, asyncio.Task[None]]
    _background: list[asyncio.Task[None]]
    _finished: list[FinishedAttempt]
    _unreported: dict[str, int]
    _held: set[str]

    if TYPE_CHECKING:  # the loop's, in soniq.worker: the flush is one more round trip

        async def _round_trip(
            self,
            finished: list[FinishedAttempt],
            free: int,
            want: int = 0,
            starts: list[StartedAttempt] | None = None,
            with_due: bool = False,
        ) -> Claim: ...

        async def _finish_separately(
            self, finished: list[FinishedAttempt], exc: BaseException
        ) -> None: ...

    async def _shutdown(self) -> None:
        self._stopping = True
        if self._running:
            _done, pending = await asyncio.wait(
                list(self._running.values()), timeout=self.grace_period
            )
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "%d job(s) still running after the %.3gs grace period; putting them back",
                    len(pending),
                    self.grace_period,
                )
                await asyncio.wait(pending, timeout=5)
            # An attempt that ignored its cancellation is still running: like a thread, it
            # keeps its job until this process is gone.
            self._held.update(job_id for job_id, task in self._running.items() if not task.done())
            if self._held:
                logger.warning(
                    "%d job(s) cannot be interrupted (plain `def` jobs run in threads); they "
                    "stay with this worker, their attempt refunded, and go back to the queue "
                    "when its lease runs out (%.3gs), once this process has exited",
                    len(self._held),
                    self.lease_seconds,
                    extra={"event": "worker.jobs_held", "worker_id": self.id},
                )
        await self._control.close()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(BaseException):
                await task
        await self._flush_final()
        self._executor.shutdown()

    @property
    def held_jobs(self) -> frozenset[str]:
        """Jobs still running in threads after shutdown; the process should exit now so that
        they stop before their lease runs out (``soniq worker`` does)."""
        return frozenset(self._held)

    async def _flush_final(self) -> None:
        held = list(self._held)
        for delay in (0, 0.5, 1, 2):
            if delay:
                await asyncio.sleep(delay)
            try:
                finished, self._finished = self._finished, []
                # A held job started from the buffer has its start written first, so that the
                # refund below finds a counted attempt to refund.
                starts = [
                    StartedAttempt(i, a) for i, a in self._unreported.items() if i in self._held
                ]
                try:
                    await self._round_trip(finished, 0, starts=starts)
                    for f in starts:
                        self._unreported.pop(f.id, None)
                except BAD_DATA_ERRORS as exc:
                    await self._finish_separately(finished, exc)
                    if self._finished:
                        continue  # an outage interrupted it: try again after the delay
                await self._db.release_untracked(held)
                if held:
                    # Handing these back now would let another worker start one while our
                    # thread still runs it. They stay ours, the attempt refunded in advance,
                    # and the lease (which counts an attempt) returns them after we are gone;
                    # so the worker row stays too, for the lease to expire.
                    await self._db.refund_held(held)
                else:
                    await self._db.deregister_worker()
                return
            except CONNECTION_ERRORS as exc:
                self._finished[:0] = finished
                logger.warning("Could not record final results (%s); retrying", exc)
        logger.error(
            "Worker %s could not record %d result(s); the lease will recover them",
            self.id,
            len(self._finished),
        )
