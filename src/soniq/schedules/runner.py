"""The firing loop every worker runs in the background: no separate scheduler process.

Each worker keeps the schedules whose job it knows in memory and sleeps until the earliest next
fire time (measured on the database clock, read with the schedules). Then, in one transaction,
it locks the schedule's row, decides on the database's ``now`` which fire times are due
(:func:`soniq.schedules.timing.plan`), inserts each one's key into ``soniq_schedule_fires`` and
writes its job through the enqueue chain on the same connection, and moves ``next_run_at`` on.
Workers due at the same moment queue on the row lock; the ones after the first find the time
already taken and go back to sleep. A worker killed mid-fire leaves nothing: its transaction is
rolled back and the next worker in line fires. The fire key makes a second job for one fire time
impossible even if all of that went wrong.

Changes (add, pause, resume, remove, a deploy) arrive as NOTIFY on ``sql.SCHEDULES_CHANNEL`` on
the worker's LISTEN connection; the schedules are also read again every ``REFRESH_EVERY``
seconds in case a notification was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from datetime import datetime
from typing import TYPE_CHECKING

from ..db_errors import CONNECTION_ERRORS
from ..errors import DatabaseUnavailable, SoniqError
from ..middleware import EnqueueContext, PendingJob
from .spec import ScheduleSpec
from .store import ScheduleStore
from .timing import plan

if TYPE_CHECKING:
    from ..app import Soniq

logger = logging.getLogger("soniq")

REFRESH_EVERY = 60.0
_MAX_BACKOFF = 30.0


class ScheduleRunner:
    """One worker's firing loop (``Worker`` starts it with its other background tasks)."""

    def __init__(self, app: Soniq, worker_id: str) -> None:
        self.app = app
        self.worker_id = worker_id
        self.store = ScheduleStore(app._store)
        self._due: dict[str, float] = {}  # schedule name -> loop time of its next fire
        self._failures: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._reload = True
        self.fires = 0  # jobs this runner wrote (for tests and logs)

    def changed(self) -> None:
        """A schedule changed (NOTIFY) or notifications may have been lost: read them again."""
        self._reload = True
        self._changed.set()

    @property
    def next_due_in(self) -> float | None:
        """Seconds until the earliest fire this runner knows of (None: none)."""
        if not self._due:
            return None
        return min(self._due.values()) - asyncio.get_running_loop().time()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.5
        declared = False
        refresh_at = 0.0
        while True:
            try:
                if not declared:
                    await self._declare()
                    declared = True
                if self._reload or loop.time() >= refresh_at:
                    self._reload = False
                    self._changed.clear()
                    await self._load()
                    refresh_at = loop.time() + REFRESH_EVERY
                for name, at in sorted(self._due.items(), key=lambda item: item[1]):
                    if at <= loop.time():
                        await self._fire_guarded(name)
                backoff = 0.5
                wake = min([refresh_at, *self._due.values()])
                wait = wake - loop.time()
                if wait > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), wait)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                level = logging.WARNING if isinstance(exc, CONNECTION_ERRORS) else logging.ERROR
                if isinstance(exc, SoniqError):
                    level = logging.WARNING
                logger.log(
                    level,
                    "Schedules could not be read or declared (%s: %s); trying again in %.2gs",
                    type(exc).__name__,
                    exc,
                    backoff,
                    extra={"event": "schedule.error", "worker_id": self.worker_id},
                )
                self._reload = True
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)

    async def _declare(self) -> None:
        """Write the ``@app.periodic`` schedules: a deploy's cron takes effect as it starts."""
        declared = self.app.scheduler.declared
        if declared:
            changed = await self.store.upsert(list(declared.values()), replace=False)
            for name in changed:
                spec = declared[name]
                logger.info(
                    "Schedule %s declared: %s runs %s",
                    name,
                    spec.timetable,
                    spec.job_name,
                    extra={"event": "schedule.declared", "schedule": name},
                )

    async def _load(self) -> None:
        names = self.app.registry.names()
        await self.store.set_worker_job_names(self.worker_id, names)
        schedules = await self.store.worker_schedules(names)
        loop = asyncio.get_running_loop()
        self._due = {}
        for stored in schedules:
            self._place(stored.name, stored.next_run_at, stored.db_now, loop.time())

    def _place(self, name: str, next_run_at: datetime | None, db_now: datetime, at: float) -> None:
        if next_run_at is None:  # paused
            self._due.pop(name, None)
        else:
            self._due[name] = at + (next_run_at - db_now).total_seconds()

    async def _fire_guarded(self, name: str) -> None:
        try:
            await self.fire(name)
            self._failures.pop(name, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, (*CONNECTION_ERRORS, DatabaseUnavailable)):
                raise  # the loop backs off and reads everything again
            # This schedule's fire fails (e.g. its arguments no longer fit the job, or an
            # enqueue middleware refused it): the others go on; this one is tried again later.
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            delay = min(_MAX_BACKOFF * 10, 2.0**failures)
            self._due[name] = asyncio.get_running_loop().time() + delay
            logger.error(
                "Schedule %s could not fire (%s: %s); trying again in %.3gs",
                name,
                type(exc).__name__,
                exc,
                delay,
                extra={"event": "schedule.error", "schedule": name, "worker_id": self.worker_id},
            )

    async def fire(self, name: str) -> None:
        """Fire what is due of schedule ``name`` now (nothing if another worker did)."""
        loop = asyncio.get_running_loop()
        fired: list[tuple[datetime, str]] = []
        skipped: list[datetime] = []
        async with self.store.transaction() as conn:
            locked = await self.store.lock(conn, name)
            started = loop.time()
            if locked is None:
                self._due.pop(name, None)
                return
            spec = locked.to_spec()
            job = self.app.registry.find(spec.job_name)
            db_now = locked.db_now
            if job is None or locked.paused or locked.next_run_at is None:
                self._due.pop(name, None)
                return
            todo = plan(spec, locked.next_run_at, db_now)
            if not todo.fire and not todo.missed:
                self._place(name, locked.next_run_at, db_now, started)
                return  # another worker fired it first
            busy = locked.busy and not spec.overlap
            args_json = job.bind(spec.args)
            for fire_time in todo.fire:
                if busy:
                    if await self.store.insert_fire(
                        conn, name, fire_time, None, "skipped_overlap", self.worker_id
                    ):
                        skipped.append(fire_time)
                    continue
                job_id = _new_job_id()
                if not await self.store.insert_fire(
                    conn, name, fire_time, job_id, "fired", self.worker_id
                ):
                    continue  # fired already (the key held where the row lock did not)
                pending = PendingJob(
                    job_id,
                    job,
                    job.queue,
                    args_json,
                    job.priority,
                    None,
                    random.uniform(0.0, spec.jitter) if spec.jitter else 0.0,
                    schedule=name,
                    fire_time=fire_time,
                )
                await self.app.middleware.enqueue_call(self.app.writer)(
                    EnqueueContext([pending], batch=False, connection=conn)
                )
                fired.append((fire_time, job_id))
                busy = not spec.overlap
            times = [t for t, _ in fired] + skipped
            await self.store.advance(
                conn,
                name,
                next_run_at=todo.next_run_at,
                last_run_at=max(times) if times else None,
                last_job_id=fired[-1][1] if fired else None,
                fired=len(fired),
                skipped=len(skipped),
                missed=todo.missed,
            )
        self._place(name, todo.next_run_at, db_now, started)
        self.fires += len(fired)
        self._log(spec, fired, skipped, todo.missed, db_now)

    def _log(
        self,
        spec: ScheduleSpec,
        fired: list[tuple[datetime, str]],
        skipped: list[datetime],
        missed: int,
        db_now: datetime,
    ) -> None:
        for fire_time, job_id in fired:
            logger.info(
                "Schedule %s fired %s for %s (job %s)",
                spec.name,
                spec.job_name,
                fire_time.isoformat(),
                job_id,
                extra={
                    "event": "schedule.fired",
                    "schedule": spec.name,
                    "job_name": spec.job_name,
                    "job_id": job_id,
                    "fire_time": fire_time.isoformat(),
                    "late_s": round((db_now - fire_time).total_seconds(), 3),
                },
            )
        for fire_time in skipped:
            logger.warning(
                "Schedule %s skipped its fire for %s: its previous job is still queued or "
                "running (overlap=False)",
                spec.name,
                fire_time.isoformat(),
                extra={
                    "event": "schedule.skipped",
                    "schedule": spec.name,
                    "job_name": spec.job_name,
                    "fire_time": fire_time.isoformat(),
                    "reason": "overlap",
                },
            )
        if missed:
            logger.warning(
                "Schedule %s missed %d fire time(s) while no worker ran it (missed=%r)",
                spec.name,
                missed,
                spec.missed,
                extra={
                    "event": "schedule.missed",
                    "schedule": spec.name,
                    "job_name": spec.job_name,
                    "missed": missed,
                    "policy": spec.missed,
                },
            )


def _new_job_id() -> str:
    from ..app import new_job_id

    return new_job_id()
