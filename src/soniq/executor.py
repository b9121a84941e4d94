"""Runs the job function itself: the innermost call of every attempt."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .context import AttemptContext, current_attempt
from .control import Snooze
from .errors import JobTimeout


class JobExecutor:
    """Calls ``async def`` jobs on the loop and plain ``def`` jobs in a bounded thread pool,
    with the caller's context variables copied into the thread."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None
        # Jobs whose function is running in a thread right now, each with an event set when
        # it returns. Cancelling an attempt (timeout, shutdown) does not stop its thread, so
        # the worker asks here which jobs are still really running, and waits on the event.
        self.busy_threads: dict[str, asyncio.Event] = {}

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="soniq-job")
        return self._pool

    def shutdown(self) -> None:
        if self._pool is not None:
            # Threads cannot be killed; do not wait for ones still running past a timeout.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _in_thread(
        self,
        job_id: str,
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context,
        func: Callable[..., Any],
        kwargs: dict[str, Any],
    ) -> Any:
        returned = asyncio.Event()
        self.busy_threads[job_id] = returned
        try:
            return context.run(func, **kwargs)
        finally:
            del self.busy_threads[job_id]
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(returned.set)

    async def __call__(self, ctx: AttemptContext) -> Any:
        spec = ctx.spec
        kwargs = ctx.args
        if spec.context_param is not None:
            kwargs = {**kwargs, spec.context_param: ctx.job_context()}
        token = current_attempt.set(ctx)
        started = time.perf_counter()
        try:
            if spec.is_async:
                call = spec.func(**kwargs)
            else:
                loop = asyncio.get_running_loop()
                call = loop.run_in_executor(
                    self._thread_pool(),
                    functools.partial(
                        self._in_thread,
                        ctx.job_id,
                        loop,
                        contextvars.copy_context(),
                        spec.func,
                        kwargs,
                    ),
                )
            if spec.timeout is None:
                return await call
            try:
                return await asyncio.wait_for(call, spec.timeout)
            except asyncio.TimeoutError:
                raise JobTimeout(f"Job {spec.name} timed out after {spec.timeout:g}s") from None
        except Snooze as snooze:
            # Raised or returned, a snooze travels out as the attempt's result: it is not a
            # failure, so no layer's error handling (nor an on_error hook) sees it.
            return snooze
        finally:
            ctx.duration_ms = (time.perf_counter() - started) * 1000.0
            current_attempt.reset(token)
