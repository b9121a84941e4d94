"""Failures are visible without any instrumentation: the layer every app starts with.

Without it a job that raised, retried and ended in the dead-letter queue left no line in the
worker's output. This layer logs each failed attempt at WARNING and each move to the
dead-letter queue at ERROR with the traceback, to the ``soniq.jobs`` logger, as readable
sentences. Successes log nothing: a worker at the default INFO level stays quiet while all is
well.

The full structured-log layer (``app.instrument(logs=True)``, :mod:`soniq.logs.middleware`)
logs the same two events with every field. While it is in the chain this layer steps aside (it
stays listed, but adds nothing to the composed chain), so no failure is logged twice; remove
the log layer and this one logs again.
"""

from __future__ import annotations

import logging
from datetime import timezone
from typing import Any

from ..context import AttemptContext
from ..jobs import Outcome
from ..middleware import CallNext, Middleware, MiddlewareChain

#: The ``event`` field, as the structured-log layer names the same two events.
RETRY_EVENT = "job.retry"
DEAD_LETTER_EVENT = "job.dead_letter"


class FailureLogMiddleware(Middleware):
    """Logs failed attempts (WARNING) and dead-lettered jobs (ERROR, with the traceback).

    A telemetry layer: if logging itself raises, the error is reported and the job's own
    outcome stands. Remove it with ``app.middleware.remove(FailureLogMiddleware)``.
    """

    telemetry = True
    # Between the log layer (20) and OTLP log export (25); inside tracing (10), so a handler's
    # JobContextFilter adds the attempt's trace ids.
    order = 22

    def __init__(self, logger_name: str = "soniq.jobs") -> None:
        self.logger = logging.getLogger(logger_name)

    def __repr__(self) -> str:
        return f"FailureLogMiddleware({self.logger.name!r})"

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            return await call_next(ctx)
        except Exception as exc:
            self.failed(ctx, exc)
            raise

    def compose_step(self, call_next: CallNext, chain: MiddlewareChain) -> CallNext:
        """The step ``compose`` puts in the chain instead of the generic telemetry wrapper.

        Every app has this layer, so its cost is on every job of the plain drain: one frame
        and a ``try`` here against about 0.75 us for the generic wrapper. It keeps the
        wrapper's promises itself: the job's result or error passes through untouched (the
        inner layers settled the outcome) and its own failure is reported, never raised.
        """
        if any(layer.logs_failures for layer in chain):
            # The log layer reports each failure itself, with every field: once is enough. Any
            # edit composes the chain again, so removing that layer brings this step back.
            return call_next

        async def failure_log(ctx: AttemptContext) -> Any:
            try:
                return await call_next(ctx)
            except Exception as exc:
                try:
                    self.failed(ctx, exc)
                except Exception as own:
                    chain.report_telemetry_error(self, own)
                raise

        return failure_log

    def failed(self, ctx: AttemptContext, exc: Exception) -> None:
        # Inner layers settled the outcome; the fallback only guards a chain that did not.
        outcome = ctx.outcome or (Outcome.DEAD_LETTER if ctx.final else Outcome.RETRY)
        what = (
            f"Job {ctx.job_name} ({ctx.job_id}) failed on attempt {ctx.attempt} of "
            f"{ctx.max_attempts}: {exc!r}"
        )
        if outcome == Outcome.RETRY:
            self.logger.warning("%s; %s", what, _when_again(ctx), extra={"event": RETRY_EVENT})
        else:
            self.logger.error(
                "%s; moved to the dead-letter queue (see it with `soniq dead-letter list`, run "
                "it again with `soniq dead-letter retry %s`)",
                what,
                ctx.job_id,
                exc_info=exc,
                extra={"event": DEAD_LETTER_EVENT},
            )


def _when_again(ctx: AttemptContext) -> str:
    if ctx.next_attempt_at is None:
        return "it runs again"
    at = ctx.next_attempt_at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    delay = ctx.retry_delay if ctx.retry_delay is not None else 0.0
    seconds = f"{delay:.2f}" if delay < 10 else f"{delay:.0f}"
    return f"it runs again in {seconds} s, at {at.replace('+00:00', 'Z')}"
