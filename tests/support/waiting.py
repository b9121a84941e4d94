"""Polls with a deadline, so tests wait for events instead of sleeping."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from soniq import Soniq, Worker

T = TypeVar("T")


async def wait_until(
    check: Callable[[], Awaitable[T] | T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value  # type: ignore[misc]
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def job_status(app: Soniq, job_id: str) -> str | None:
    job = await app.get_job(job_id)
    return None if job is None else job["status"]


async def wait_status(
    app: Soniq, job_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await app.get_job(job_id)
        return job if job is not None and job["status"] == status else None

    return await wait_until(check, timeout=timeout, what=f"job {job_id} to be {status}")


@asynccontextmanager
async def running_worker(app: Soniq, **options: Any) -> AsyncIterator[Worker]:
    """A worker running in the background of the test's loop, stopped gracefully at exit."""
    options.setdefault("install_signal_handlers", False)
    worker = app.worker(**options)
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: worker in app.workers or task.done(), what="worker start")
        if task.done():
            task.result()
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
