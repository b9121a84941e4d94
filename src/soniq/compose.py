"""How the chain folds its layers into the one callable an attempt or an enqueue goes through.

:class:`~soniq.middleware.MiddlewareChain` calls :func:`compose` and :func:`compose_enqueue`
once after each edit and keeps what they return; nothing here runs per layer per job except
the steps themselves. A step is chosen by what the layer is:

- a user's middleware: its ``__call__``, with the outcome settled as the result or error
  passes (:func:`_step`);
- a telemetry layer with an ``async __call__``: the same, but what the layer itself raises is
  reported and never fails the job (:func:`_telemetry_step`);
- a run of adjacent :class:`~soniq.middleware.ObservingLayer` s (the built-in tracing, logs and
  metrics layers): one frame that calls their ``begin`` in order and their ``end`` in reverse
  (:func:`observing_step`), which nests exactly as separate steps would, without a coroutine
  frame per layer;
- a layer with its own ``compose_step(call_next, chain)``: what that returns (asked twice
  at most, so it must only build: ``call_next`` itself back means no step at all).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .context import AttemptContext
from .middleware import Middleware, ObservingLayer

if TYPE_CHECKING:
    from .middleware import CallNext, EnqueueContext, EnqueueNext, MiddlewareChain
    from .middleware import TelemetryErrorListener as Report


def compose(chain: MiddlewareChain, innermost: CallNext) -> CallNext:
    """Fold the middlewares around ``innermost`` (the hooks layer and the job); what
    :meth:`MiddlewareChain.job_call` builds and keeps.

    Every step settles the attempt's outcome as an exception or a result passes through it,
    so each outer layer sees ``ctx.outcome`` already decided. Observing layers only read it,
    so a run of them needs no settling between them.
    """
    call = _settling(innermost)
    observers: list[ObservingLayer] = []  # a run of adjacent ones, innermost first
    for mw in reversed(list(chain)):
        own = getattr(mw, "compose_step", None)  # a layer that builds its own, cheaper step
        if isinstance(mw, ObservingLayer) and own is None:
            observers.append(mw)
            continue
        if own is not None and own(call, chain) is call:
            # A layer with nothing to do on this chain (the failure log beside the log layer,
            # OTLP log export) adds no step, so it does not split a run of observers either.
            continue
        if observers:
            call = observing_step(observers[::-1], call, chain.report_telemetry_error)
            observers = []
        if own is not None:
            call = own(call, chain)
        else:
            call = _telemetry_step(mw, call, chain) if mw.telemetry else _step(mw, call)
    if observers:
        call = observing_step(observers[::-1], call, chain.report_telemetry_error)
    return call


def _settling(call_next: CallNext) -> CallNext:
    async def settle(ctx: AttemptContext) -> Any:
        try:
            result = await call_next(ctx)
        except Exception as exc:
            ctx.settle_failure(exc)
            raise
        if ctx.outcome != "done":
            ctx.settle_success(result)
        return result

    return settle


def _step(mw: Middleware, call_next: CallNext) -> CallNext:
    def layer(ctx: AttemptContext) -> Any:
        return mw(ctx, call_next)

    return _settling(layer)


# ---------------------------------------------------------------------------------------------
# Observing layers: begin and end around the inner layers, in one frame.

_FAILED = object()  # begin() raised: the attempt runs without that layer


def observing_step(
    layers: Sequence[ObservingLayer], call_next: CallNext, report: Report
) -> CallNext:
    """One attempt step around ``call_next`` for ``layers`` (outermost first): each ``begin``
    in order, the inner layers, each ``end`` in reverse, as if each layer were its own step.
    What a ``begin`` or ``end`` raises is reported, never raised (the attempt goes on without
    that layer when its ``begin`` fails), so the job's own result or error is all that leaves.
    """
    if len(layers) == 1:
        return _one_observer(layers[0], call_next, report)
    steps = tuple((layer, layer.begin, layer.end) for layer in layers)
    backwards = tuple(reversed(range(len(steps))))

    def end_all(ctx: AttemptContext, states: list[Any], error: BaseException | None) -> None:
        for i in backwards:
            state = states[i]
            if state is not _FAILED:
                layer, _, end = steps[i]
                try:
                    end(ctx, state, error)
                except Exception as own:
                    report(layer, own)

    async def observed(ctx: AttemptContext) -> Any:
        states: list[Any] = []
        for layer, begin, _ in steps:
            try:
                states.append(begin(ctx))
            except Exception as own:
                report(layer, own)
                states.append(_FAILED)
        # Outside any ``except`` block, so the job's own error is not chained to a layer's.
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            end_all(ctx, states, exc)
            raise
        end_all(ctx, states, None)
        return result

    return observed


def _one_observer(layer: ObservingLayer, call_next: CallNext, report: Report) -> CallNext:
    begin, end = layer.begin, layer.end

    async def observed(ctx: AttemptContext) -> Any:
        try:
            state = begin(ctx)
        except Exception as own:
            report(layer, own)
            state = _FAILED
        if state is _FAILED:
            return await call_next(ctx)
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            try:
                end(ctx, state, exc)
            except Exception as own:
                report(layer, own)
            raise
        try:
            end(ctx, state, None)
        except Exception as own:
            report(layer, own)
        return result

    return observed


# ---------------------------------------------------------------------------------------------
# Telemetry layers with an ``async __call__``.


class _InnerCall:
    """Records what the inner layers did, so a telemetry layer's own failure can be told apart
    from the job's and the job's true result or error handed on."""

    __slots__ = ("call_next", "called", "error", "result")

    def __init__(self, call_next: CallNext) -> None:
        self.call_next = call_next
        self.called = False
        self.error: BaseException | None = None
        self.result: Any = None

    async def __call__(self, ctx: AttemptContext) -> Any:
        self.called = True
        try:
            self.result = await self.call_next(ctx)
        except BaseException as exc:
            self.error = exc
            raise
        return self.result


def _telemetry_step(mw: Middleware, call_next: CallNext, chain: MiddlewareChain) -> CallNext:
    async def step(ctx: AttemptContext) -> Any:
        inner = _InnerCall(call_next)
        try:
            await mw(ctx, inner)
        except Exception as exc:
            if exc is inner.error:
                raise
            chain.report_telemetry_error(mw, exc)
        else:
            if not inner.called:
                chain.report_telemetry_error(
                    mw, RuntimeError(f"{mw!r} did not call call_next; the job ran without it")
                )
        # A telemetry layer only observes: whatever it returned or swallowed, the attempt goes
        # on with the inner layers' own result or error. Re-raised outside the ``except`` block
        # so the job's exception keeps its own context chain for the recorded traceback.
        if not inner.called:
            return await call_next(ctx)
        if inner.error is not None:
            raise inner.error
        return inner.result

    return step


# ---------------------------------------------------------------------------------------------
# Enqueues.


def compose_enqueue(chain: MiddlewareChain, write: EnqueueNext) -> EnqueueNext:
    call = write
    for mw in reversed(list(chain)):
        if type(mw).enqueue is Middleware.enqueue:
            continue  # pass-through layers cost nothing
        call = _enqueue_step(mw, call, chain)
    return call


def _enqueue_step(mw: Middleware, call_next: EnqueueNext, chain: MiddlewareChain) -> EnqueueNext:
    if not mw.telemetry:
        # A user's enqueue middleware decides: what it raises fails the enqueue.
        async def user_step(ctx: EnqueueContext) -> None:
            await mw.enqueue(ctx, call_next)

        return user_step

    async def step(ctx: EnqueueContext) -> None:
        called = False
        inner_error: BaseException | None = None

        async def inner(c: EnqueueContext) -> None:
            nonlocal called, inner_error
            called = True
            try:
                await call_next(c)
            except BaseException as exc:
                inner_error = exc
                raise

        try:
            await mw.enqueue(ctx, inner)
        except Exception as exc:
            if exc is inner_error:
                raise
            chain.report_telemetry_error(mw, exc)
        else:
            if not called:
                chain.report_telemetry_error(
                    mw, RuntimeError(f"{mw!r} did not call call_next; the jobs were written")
                )
        # As for attempts: a telemetry layer never decides whether the jobs are written.
        if not called:
            await call_next(ctx)
        elif inner_error is not None:
            raise inner_error

    return step
