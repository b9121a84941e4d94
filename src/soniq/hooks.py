"""User hooks (``@app.before_job``, ``@app.after_job``, ``@app.on_error``): the innermost layer.

The chain owns them (``app.middleware.hooks``, registered through ``add_hook``) and wraps them
around the job function when it compiles itself. The hooks page is the contract: hooks run in
registration order, sync or async, and a hook that raises is logged as
``Hook <event> failed: <repr>`` and never stops the job or its recording.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from .context import AttemptContext
from .control import Snooze

logger = logging.getLogger("soniq")

Hook = Callable[..., Any]
HookEvent = Literal["before_job", "after_job", "on_error"]
HOOK_EVENTS: tuple[HookEvent, ...] = ("before_job", "after_job", "on_error")

# The same shape as soniq.middleware.CallNext (not imported: the chain imports this module).
_RunJob = Callable[[AttemptContext], Awaitable[Any]]


class Hooks:
    """The registered hooks per event, in registration order. Register through
    ``MiddlewareChain.add_hook`` so the chain rebuilds; the lists are for reading."""

    def __init__(self) -> None:
        self.before_job: list[Hook] = []
        self.after_job: list[Hook] = []
        self.on_error: list[Hook] = []

    def add(self, event: HookEvent, func: Hook) -> None:
        getattr(self, event).append(func)

    def __bool__(self) -> bool:
        return bool(self.before_job or self.after_job or self.on_error)

    def wrap(self, run_job: _RunJob) -> _RunJob:
        """The innermost layer: hooks around the job function."""
        if not self:
            return run_job

        async def hooks_layer(ctx: AttemptContext) -> Any:
            if self.before_job:
                await _run(self.before_job, "before_job", (ctx.job_name, ctx.job_id, ctx.attempt))
            try:
                result = await run_job(ctx)
            except Exception as exc:
                if self.on_error:
                    await _run(
                        self.on_error, "on_error", (ctx.job_name, ctx.job_id, str(exc), ctx.attempt)
                    )
                raise
            if self.after_job and not isinstance(result, Snooze):  # snoozed: not a success
                duration_ms = ctx.duration_ms if ctx.duration_ms is not None else 0.0
                await _run(self.after_job, "after_job", (ctx.job_name, ctx.job_id, duration_ms))
            return result

        return hooks_layer


async def _run(hooks: list[Hook], event: str, args: tuple[Any, ...]) -> None:
    """Call one event's hooks in registration order. One coroutine per event, not per hook:
    the common no-op hook then costs little more than the call itself."""
    for hook in hooks:
        try:
            outcome = hook(*args)
            # Inspected per call, as documented: a plain function, an async def, an object with
            # an async __call__, or a function that only sometimes returns an awaitable.
            if outcome is not None and inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:
            # The page's exact line; which hook it was rides along for structured logs.
            logger.warning(
                "Hook %s failed: %r",
                event,
                exc,
                extra={"hook": getattr(hook, "__qualname__", None) or repr(hook)},
            )
