"""User hooks (``@app.before_job``, ``@app.after_job``, ``@app.on_error``): the innermost layer.

The hooks page is the contract: hooks run in registration order, sync or async, and a hook that
raises is logged as ``Hook <event> failed: <repr>`` and never stops the job or its recording.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from .context import AttemptContext
from .middleware import CallNext

logger = logging.getLogger("soniq")

Hook = Callable[..., Any]


class Hooks:
    def __init__(self) -> None:
        self.before_job: list[Hook] = []
        self.after_job: list[Hook] = []
        self.on_error: list[Hook] = []

    def __bool__(self) -> bool:
        return bool(self.before_job or self.after_job or self.on_error)

    def wrap(self, run_job: CallNext) -> CallNext:
        """The innermost layer: hooks around the job function."""
        if not self:
            return run_job

        async def hooks_layer(ctx: AttemptContext) -> Any:
            for hook in self.before_job:
                await _call(hook, "before_job", ctx.job_name, ctx.job_id, ctx.attempt)
            try:
                result = await run_job(ctx)
            except Exception as exc:
                error = str(exc)
                for hook in self.on_error:
                    await _call(hook, "on_error", ctx.job_name, ctx.job_id, error, ctx.attempt)
                raise
            duration_ms = ctx.duration_ms if ctx.duration_ms is not None else 0.0
            for hook in self.after_job:
                await _call(hook, "after_job", ctx.job_name, ctx.job_id, duration_ms)
            return result

        return hooks_layer


async def _call(hook: Hook, event: str, *args: Any) -> None:
    try:
        outcome = hook(*args)
        # Inspected per call, as documented: a plain function, an async def, or an object whose
        # __call__ is async all work.
        if inspect.isawaitable(outcome):
            await outcome
    except Exception as exc:
        # The page's exact line; which hook it was rides along for structured logs.
        logger.warning(
            "Hook %s failed: %r", event, exc,
            extra={"hook": getattr(hook, "__qualname__", None) or repr(hook)},
        )
