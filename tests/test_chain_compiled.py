"""The chain owns its compiled form: built once, rebuilt when edited (middlewares or hooks),
and the app and the worker only ask it for the callable."""

from __future__ import annotations

from typing import Any

import pytest

from soniq import AttemptContext, CallNext, Middleware, ObservingLayer, Soniq
from soniq.middleware import EnqueueContext, EnqueueNext, MiddlewareChain
from tests.support.waiting import running_worker, wait_status


async def _job(ctx: AttemptContext) -> str:
    return "ran"


async def _write(ctx: EnqueueContext) -> None:
    pass


class Passing(Middleware):
    pass


class Enqueueing(Middleware):
    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        await call_next(ctx)


def test_the_compiled_callables_are_built_once_and_rebuilt_after_each_edit() -> None:
    chain = MiddlewareChain()
    bare = chain.job_call(_job)
    assert chain.job_call(_job) is bare, "asked twice, built once"
    assert chain.enqueue_call(_write) is _write, "no enqueue layer: the writer itself"

    chain.add(Passing())
    with_layer = chain.job_call(_job)
    assert with_layer is not bare and chain.job_call(_job) is with_layer
    assert chain.enqueue_call(_write) is _write, "a layer that does not wrap enqueues costs none"

    chain.add(Enqueueing())
    wrapped = chain.enqueue_call(_write)
    assert wrapped is not _write and chain.enqueue_call(_write) is wrapped

    chain.add_hook("before_job", lambda *args: None)
    hooked = chain.job_call(_job)
    assert hooked is not with_layer and chain.job_call(_job) is hooked

    chain.remove(Enqueueing)
    assert chain.enqueue_call(_write) is _write


def test_each_innermost_callable_gets_its_own_compiled_form() -> None:
    chain = MiddlewareChain()
    chain.add(Passing())

    async def other(ctx: AttemptContext) -> str:
        return "other"

    first, second = chain.job_call(_job), chain.job_call(other)
    assert first is not second
    assert chain.job_call(_job) is first and chain.job_call(other) is second


def test_an_unknown_hook_event_is_refused_with_the_events_named() -> None:
    chain = MiddlewareChain()
    with pytest.raises(ValueError, match="before_job, after_job, on_error"):
        chain.add_hook("after_each", print)  # type: ignore[arg-type]


async def test_edits_while_a_worker_runs_reach_its_next_attempts(app: Soniq) -> None:
    seen: list[str] = []

    @app.job(name="tick")
    async def tick() -> None:
        pass

    async with running_worker(app):
        first = await app.enqueue("tick")
        await wait_status(app, first, "done")

        @app.middleware
        async def outer(ctx: AttemptContext, call_next: CallNext) -> Any:
            seen.append("middleware")
            return await call_next(ctx)

        @app.before_job
        def hook(job_name: str, job_id: str, attempt: int) -> None:
            seen.append("hook")

        second = await app.enqueue("tick")
        await wait_status(app, second, "done")
    assert seen == ["middleware", "hook"]
    assert app.hooks.before_job == [hook]


class Observer(ObservingLayer):
    """Records its calls in a shared log; fails in ``begin`` or ``end`` when told to."""

    def __init__(self, name: str, order: int, log: list[str], fail: str = "") -> None:
        self.name, self.log, self.fail = name, log, fail
        self.order = order  # the built-in position, per instance here

    @property
    def key(self) -> object:
        return self.name

    def begin(self, ctx: AttemptContext) -> str:
        self.log.append(f"begin {self.name}")
        if self.fail == "begin":
            raise RuntimeError(f"{self.name} begin")
        return self.name

    def end(self, ctx: AttemptContext, state: str, error: BaseException | None) -> None:
        self.log.append(f"end {self.name} {state} {ctx.outcome} {type(error).__name__}")
        if self.fail == "end":
            raise RuntimeError(f"{self.name} end")


async def test_adjacent_observing_layers_nest_as_separate_steps_would(app: Soniq) -> None:
    """The chain runs a run of observing layers in one frame; begins go outermost first and
    ends innermost first, a failing begin leaves only its own layer out, a failing end is
    reported, and a user middleware between two layers splits the run where it stands."""
    log: list[str] = []
    reported: list[str] = []
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append(str(exc)))
    for name, order, fail in (("a", 10, "end"), ("b", 20, "begin"), ("c", 30, ""), ("d", 40, "")):
        app.middleware.add_builtin(Observer(name, order, log, fail))

    class Between(Middleware):
        async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
            log.append("between")
            return await call_next(ctx)

    app.middleware.insert_after("c", Between())

    @app.job(max_retries=0)
    async def fails() -> None:
        log.append("job")
        raise ValueError("the job's own")

    job_id = await app.enqueue(fails)
    async with running_worker(app):
        row = await wait_status(app, job_id, "dead_letter")
    assert row["last_error"] == "ValueError: the job's own"
    assert log == [
        "begin a",
        "begin b",
        "begin c",
        "between",
        "begin d",
        "job",
        "end d d dead_letter ValueError",
        "end c c dead_letter ValueError",
        "end a a dead_letter ValueError",
    ]
    assert reported == ["b begin", "a end"]
