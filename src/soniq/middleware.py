"""The middleware chain that wraps every job attempt and every enqueue.

Layers run outermost first. Built-in telemetry layers (tracing, logs, metrics) sit at the
front; middlewares the user adds follow in the order given; the user's hooks (``chain.hooks``)
are always the innermost layer, next to the job function. The chain owns its compiled form:
``job_call`` and ``enqueue_call`` fold the layers into one callable the first time they are
asked after an edit, and hand the same callable back until the next edit, so callers never
compose or track versions themselves, and nothing is composed per job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .context import AttemptContext
from .hooks import HOOK_EVENTS, Hook, HookEvent, Hooks
from .jobs import PendingJob as PendingJob  # its home is soniq.jobs; imported from here too

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    #: A caller's connection: a plain one, or one acquired from an asyncpg pool.
    Connection = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

    from .worker import Worker

logger = logging.getLogger("soniq")

CallNext = Callable[[AttemptContext], Awaitable[Any]]


@dataclass(eq=False)
class EnqueueContext:
    """One ``enqueue`` (a single job) or ``enqueue_many`` (``batch`` is True)."""

    jobs: list[PendingJob]
    batch: bool
    #: The caller's connection (``connection=``), of any driver :mod:`soniq.connections` takes.
    connection: Any = None
    state: dict[str, Any] = field(default_factory=dict)


EnqueueNext = Callable[[EnqueueContext], Awaitable[None]]


class Middleware:
    """Base class for a layer of the chain.

    Either override ``__call__`` (the attempt's context in, the job's result out; call
    ``call_next`` once), or override any of ``before_job``, ``after_job`` and ``on_error``.
    Override ``enqueue`` to wrap enqueues. Two instances of one class are the same layer:
    adding the second replaces the first.
    """

    #: Built-in telemetry layers never fail a job: what they raise is logged and counted.
    telemetry: ClassVar[bool] = False
    #: Position among telemetry layers (lower is further out).
    order: ClassVar[int] = 100
    #: This layer logs every failed attempt itself, so the default failure log
    #: (:mod:`soniq.logs.failures`) steps aside while it is in the chain.
    logs_failures: ClassVar[bool] = False

    @property
    def key(self) -> object:
        return type(self)

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        await self.before_job(ctx)
        try:
            result = await call_next(ctx)
        except Exception as exc:
            await self.on_error(ctx, exc)
            raise
        await self.after_job(ctx, result)
        return result

    async def before_job(self, ctx: AttemptContext) -> None:
        """Called before the inner layers run."""

    async def after_job(self, ctx: AttemptContext, result: Any) -> None:
        """Called after the job succeeded; ``ctx.outcome`` is ``done``."""

    async def on_error(self, ctx: AttemptContext, error: Exception) -> None:
        """Called after the job failed; ``ctx.outcome`` is ``retry`` or ``dead_letter``."""

    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        await call_next(ctx)

    async def startup(self, worker: Worker) -> None:
        """Called when a worker starts, before it claims anything."""

    async def shutdown(self, worker: Worker) -> None:
        """Called when a worker has stopped, after its last results are written."""


class ObservingLayer(Middleware):
    """A telemetry layer made of two plain calls around the inner layers, instead of an
    ``async __call__``: ``begin(ctx)`` before them (its return value is the attempt's state),
    ``end(ctx, state, error)`` after, with the exception that came out of them (``None`` when
    they returned; an ``asyncio.CancelledError`` when shutdown or ``cancel_job`` interrupted
    the attempt). The result or error passes through untouched.

    The chain folds a run of adjacent observing layers into one frame
    (:func:`soniq.compose.observing_step`), where the generic telemetry wrapper needs three
    frames and an object per attempt for each layer; what ``begin`` or ``end`` raises is
    reported as a telemetry error and never fails the job.
    """

    telemetry: ClassVar[bool] = True

    def begin(self, ctx: AttemptContext) -> Any:
        """Called before the inner layers; the return value is handed to :meth:`end`."""

    def end(self, ctx: AttemptContext, state: Any, error: BaseException | None) -> None:
        """Called after the inner layers returned (``error`` None) or raised."""

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        state = self.begin(ctx)
        try:
            result = await call_next(ctx)
        except BaseException as exc:
            self.end(ctx, state, exc)
            raise
        self.end(ctx, state, None)
        return result


class FunctionMiddleware(Middleware):
    """A plain ``async def mw(ctx, call_next)`` registered with ``@app.middleware``."""

    def __init__(self, func: Callable[[AttemptContext, CallNext], Awaitable[Any]]) -> None:
        self.func = func

    @property
    def key(self) -> object:
        return self.func

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        return await self.func(ctx, call_next)

    def __repr__(self) -> str:
        return f"FunctionMiddleware({getattr(self.func, '__qualname__', self.func)!r})"


MiddlewareRef = Middleware | type | Callable[..., Any]
MiddlewareLike = Middleware | type[Middleware] | Callable[..., Any]

TelemetryErrorListener = Callable[[Middleware, BaseException], None]


# Compiled callables kept per innermost callable (one per worker, plus the app's writer);
# bounded so that short-lived workers in a long process leave nothing behind.
_MAX_BUILT = 16


class MiddlewareChain:
    """The ordered, editable list of middlewares (outermost first), the user's hooks as the
    innermost layer, and the callables compiled from them."""

    def __init__(self) -> None:
        self._items: list[Middleware] = []
        self.hooks = Hooks()
        self.telemetry_error_listeners: list[TelemetryErrorListener] = []
        # Compiled forms by innermost callable; emptied by every edit (see _rebuild).
        self._job_calls: dict[CallNext, CallNext] = {}
        self._enqueue_calls: dict[EnqueueNext, EnqueueNext] = {}

    # -- compiled forms ------------------------------------------------------------------
    def job_call(self, run_job: CallNext) -> CallNext:
        """The whole attempt side around ``run_job`` (the job function's caller): the layers,
        then the hooks. Built on the first call after an edit, the same object until the next.
        """
        call = self._job_calls.get(run_job)
        if call is None:
            from .compose import compose  # which imports this module's classes

            call = compose(self, self.hooks.wrap(run_job))
            _remember(self._job_calls, run_job, call)
        return call

    def enqueue_call(self, write: EnqueueNext) -> EnqueueNext:
        """The enqueue side around ``write``; ``write`` itself when no layer wraps enqueues, so
        a caller can skip building an :class:`EnqueueContext` (``call is write``)."""
        call = self._enqueue_calls.get(write)
        if call is None:
            from .compose import compose_enqueue

            call = compose_enqueue(self, write)
            _remember(self._enqueue_calls, write, call)
        return call

    # -- hooks: the innermost layer ------------------------------------------------------
    def add_hook(self, event: HookEvent, func: Hook) -> None:
        """Register a user hook (``@app.before_job`` and friends call this); runs after the
        hooks already registered for ``event``."""
        if event not in HOOK_EVENTS:
            raise ValueError(f"No hook event {event!r}; the events are {', '.join(HOOK_EVENTS)}")
        self.hooks.add(event, func)
        self._rebuild()

    # -- decorator form: @app.middleware -------------------------------------------------
    def __call__(
        self, func: Callable[[AttemptContext, CallNext], Awaitable[Any]]
    ) -> Callable[[AttemptContext, CallNext], Awaitable[Any]]:
        self.add(FunctionMiddleware(func))
        return func

    # -- list operations ---------------------------------------------------------------
    def add(self, middleware: MiddlewareLike) -> None:
        """Append as the innermost middleware (still outside the hooks), or replace in place."""
        mw = _coerce(middleware)
        at = self._find(mw.key)
        if at is None:
            self._items.append(mw)
        else:
            self._items[at] = mw
        self._rebuild()

    def add_builtin(self, middleware: Middleware) -> None:
        """Place a telemetry layer at the front, in the fixed built-in order; idempotent."""
        at = self._find(middleware.key)
        if at is not None:
            return
        index = 0
        while (
            index < len(self._items)
            and self._items[index].telemetry
            and self._items[index].order <= middleware.order
        ):
            index += 1
        self._items.insert(index, middleware)
        self._rebuild()

    def insert_before(self, ref: MiddlewareRef, middleware: MiddlewareLike) -> None:
        """Put ``middleware`` just outside ``ref`` (a layer, its class or its function)."""
        self._insert(self._index(ref), middleware)

    def insert_after(self, ref: MiddlewareRef, middleware: MiddlewareLike) -> None:
        """Put ``middleware`` just inside ``ref``."""
        self._insert(self._index(ref) + 1, middleware)

    def remove(self, ref: MiddlewareRef) -> None:
        del self._items[self._index(ref)]
        self._rebuild()

    def replace(self, ref: MiddlewareRef, middleware: MiddlewareLike) -> None:
        mw = _coerce(middleware)
        index = self._index(ref)
        other = self._find(mw.key)
        if other is not None and other != index:
            raise ValueError(f"{mw!r} is already in the chain at position {other}")
        self._items[index] = mw
        self._rebuild()

    def __iter__(self) -> Iterator[Middleware]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, ref: object) -> bool:
        return self._find(_key_of(ref)) is not None

    def __repr__(self) -> str:
        return f"MiddlewareChain({self._items!r})"

    # -- internals ---------------------------------------------------------------------
    def _insert(self, index: int, middleware: MiddlewareLike) -> None:
        mw = _coerce(middleware)
        existing = self._find(mw.key)
        if existing is not None:
            del self._items[existing]
            if existing < index:
                index -= 1
        self._items.insert(index, mw)
        self._rebuild()

    def _find(self, key: object) -> int | None:
        for i, item in enumerate(self._items):
            if item.key == key or item is key:
                return i
        return None

    def _index(self, ref: MiddlewareRef) -> int:
        found = self._find(_key_of(ref))
        if found is None:
            raise ValueError(f"{ref!r} is not in the middleware chain")
        return found

    def _rebuild(self) -> None:
        # What was compiled from the old list is dropped; the next request builds anew (callers
        # that already hold the old callable finish their attempt or enqueue with it).
        self._job_calls.clear()
        self._enqueue_calls.clear()

    def report_telemetry_error(self, middleware: Middleware, error: BaseException) -> None:
        logger.warning("Telemetry middleware %r failed: %r", middleware, error)
        for listener in self.telemetry_error_listeners:
            try:
                listener(middleware, error)
            except Exception:  # a broken listener must not break the report
                logger.exception("Telemetry error listener failed")


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _MAX_BUILT:
        del cache[next(iter(cache))]  # the oldest entry
    cache[key] = value


def _key_of(ref: object) -> object:
    if isinstance(ref, Middleware):
        return ref.key
    return ref


def _coerce(middleware: MiddlewareLike) -> Middleware:
    if isinstance(middleware, Middleware):
        return middleware
    if isinstance(middleware, type):
        if issubclass(middleware, Middleware):
            return middleware()
        raise TypeError(
            f"{middleware.__qualname__} is a class but not a soniq.Middleware subclass; "
            f"subclass Middleware, or register an async function (ctx, call_next)"
        )
    if callable(middleware):
        return FunctionMiddleware(middleware)
    raise TypeError(f"Not a middleware: {middleware!r}")
