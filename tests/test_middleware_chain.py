"""The middleware chain: editing it, its order, what outer layers learn, the enqueue side,
context variables, and the failure policy for built-in versus user middleware (issue 3)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from soniq import (
    AttemptContext,
    CallNext,
    EnqueueContext,
    EnqueueNext,
    FunctionMiddleware,
    Middleware,
    MiddlewareChain,
    ObservingLayer,
    Soniq,
    current_attempt,
)
from soniq.logs import FailureLogMiddleware
from soniq.testing import drain
from tests.support.waiting import running_worker, wait_status, wait_until

# -- editing the chain (no database) ----------------------------------------------------------


class First(Middleware):
    pass


class Second(Middleware):
    pass


class Third(Middleware):
    pass


class Tracing(Middleware):
    telemetry = True
    order = 10


class Logs(Middleware):
    telemetry = True
    order = 20


class Metrics(Middleware):
    telemetry = True
    order = 30


async def passthrough(ctx: AttemptContext, call_next: CallNext) -> Any:
    return await call_next(ctx)


def test_add_appends_and_iteration_is_outermost_first() -> None:
    chain = MiddlewareChain()
    a, b, c = First(), Second(), Third()
    chain.add(a)
    chain.add(b)
    chain.add(c)
    assert list(chain) == [a, b, c]
    assert len(chain) == 3
    assert First in chain and b in chain
    assert Tracing not in chain


def test_adding_the_same_middleware_twice_replaces_it_in_place() -> None:
    chain = MiddlewareChain()
    a, b = First(), Second()
    chain.add(a)
    chain.add(b)
    chain.add(b)  # the same object again
    assert list(chain) == [a, b]
    newer = First()  # another instance of the same class is the same layer
    chain.add(newer)
    assert list(chain) == [newer, b]


def test_adding_the_same_function_twice_keeps_one_layer() -> None:
    chain = MiddlewareChain()
    chain.add(passthrough)
    chain.add(passthrough)
    (only,) = list(chain)
    assert isinstance(only, FunctionMiddleware)
    assert only.func is passthrough


def test_add_accepts_a_middleware_class_and_rejects_other_things() -> None:
    chain = MiddlewareChain()
    chain.add(First)
    (only,) = list(chain)
    assert type(only) is First
    with pytest.raises(TypeError):
        chain.add(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"not a soniq\.Middleware subclass"):
        chain.add(dict)
    assert len(chain) == 1


def test_insert_before_and_after_by_class_instance_or_function() -> None:
    chain = MiddlewareChain()
    a, c = First(), Third()
    chain.add(a)
    chain.add(c)
    b = Second()
    chain.insert_before(Third, b)
    assert list(chain) == [a, b, c]
    chain.insert_after(c, passthrough)
    assert [type(m) for m in chain] == [First, Second, Third, FunctionMiddleware]
    chain.insert_before(passthrough, Tracing())
    assert [type(m) for m in chain] == [First, Second, Third, Tracing, FunctionMiddleware]


def test_inserting_a_layer_already_present_moves_it() -> None:
    chain = MiddlewareChain()
    a, b, c = First(), Second(), Third()
    for mw in (a, b, c):
        chain.add(mw)
    chain.insert_before(a, c)
    assert list(chain) == [c, a, b]
    chain.insert_after(b, c)
    assert list(chain) == [a, b, c]
    chain.insert_after(a, c)
    assert list(chain) == [a, c, b]


def test_remove_by_class_instance_or_function() -> None:
    chain = MiddlewareChain()
    a, b = First(), Second()
    chain.add(a)
    chain.add(b)
    chain.add(passthrough)
    chain.remove(First)
    assert next(iter(chain)) is b
    chain.remove(passthrough)
    chain.remove(b)
    assert list(chain) == []
    with pytest.raises(ValueError, match="not in the middleware chain"):
        chain.remove(Second)


def test_replace_keeps_the_position() -> None:
    chain = MiddlewareChain()
    a, b, c = First(), Second(), Third()
    for mw in (a, b, c):
        chain.add(mw)
    chain.replace(Second, passthrough)
    assert [type(m) for m in chain] == [First, FunctionMiddleware, Third]
    fresh = Third()
    chain.replace(c, fresh)  # same layer, new instance
    assert list(chain)[2] is fresh
    with pytest.raises(ValueError, match="already in the chain"):
        chain.replace(First, fresh)


def test_iteration_is_a_snapshot() -> None:
    chain = MiddlewareChain()
    chain.add(First)
    chain.add(Second)
    for mw in chain:  # editing while iterating must not skip or repeat layers
        chain.remove(mw)
    assert len(chain) == 0


def test_builtin_telemetry_layers_stay_in_front_in_fixed_order() -> None:
    chain = MiddlewareChain()
    user = First()
    chain.add(user)
    metrics, tracing, logs = Metrics(), Tracing(), Logs()
    chain.add_builtin(metrics)
    chain.add_builtin(tracing)
    chain.add_builtin(logs)
    chain.add_builtin(Tracing())  # idempotent: the first one stays
    assert list(chain) == [tracing, logs, metrics, user]
    later = Second()
    chain.add(later)
    assert list(chain)[-1] is later


def test_app_middleware_decorator_registers_a_function_and_returns_it(app: Soniq) -> None:
    @app.middleware
    async def timing(ctx: AttemptContext, call_next: CallNext) -> Any:
        return await call_next(ctx)

    assert timing in app.middleware
    # After the layer every app starts with (failures logged without any instrumentation).
    failures, layer = list(app.middleware)
    assert isinstance(failures, FailureLogMiddleware)
    assert isinstance(layer, FunctionMiddleware) and layer.func is timing


# -- running jobs through the chain -----------------------------------------------------------


class Recorder(Middleware):
    """A subclass using the convenience methods instead of wrapping."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    async def before_job(self, ctx: AttemptContext) -> None:
        self.events.append(("before", ctx.attempt, ctx.outcome))

    async def after_job(self, ctx: AttemptContext, result: Any) -> None:
        self.events.append(("after", result, ctx.outcome))

    async def on_error(self, ctx: AttemptContext, error: Exception) -> None:
        self.events.append(("error", str(error), ctx.outcome))


async def test_function_middleware_wraps_the_job_and_may_replace_the_result(app: Soniq) -> None:
    seen: list[Any] = []

    @app.job()
    async def double(n: int) -> int:
        return n * 2

    @app.middleware
    async def around(ctx: AttemptContext, call_next: CallNext) -> Any:
        seen.append(("in", ctx.job_name, ctx.args))
        result = await call_next(ctx)
        seen.append(("out", result, ctx.outcome))
        return {"wrapped": result}

    job_id = await app.enqueue(double, n=21)
    async with running_worker(app):
        job = await wait_status(app, job_id, "done")
    assert seen == [("in", _name(app, double), {"n": 21}), ("out", 42, "done")]
    assert job["result"] == {"wrapped": 42}


def _name(app: Soniq, func: Any) -> str:
    return next(spec.name for spec in app.registry if spec.func is func)


async def test_subclass_before_after_and_on_error_see_the_attempt(app: Soniq) -> None:
    events: list[Any] = []
    app.middleware.add(Recorder(events))

    @app.job()
    async def ok() -> str:
        return "fine"

    @app.job(max_retries=1, retry_backoff=0)
    async def broken() -> None:
        raise ValueError("nope")

    ok_id = await app.enqueue(ok)
    async with running_worker(app):
        await wait_status(app, ok_id, "done")
    assert events == [("before", 1, None), ("after", "fine", "done")]

    events.clear()
    broken_id = await app.enqueue(broken)
    async with running_worker(app):
        await wait_status(app, broken_id, "dead_letter")
    assert events == [
        ("before", 1, None),
        ("error", "nope", "retry"),
        ("before", 2, None),
        ("error", "nope", "dead_letter"),
    ]


async def test_layers_run_outermost_first_around_hooks_and_job(app: Soniq) -> None:
    events: list[str] = []

    def layer(name: str, telemetry: bool = False, order: int = 100) -> Middleware:
        class Layer(Middleware):
            @property
            def key(self) -> object:
                return name

            async def before_job(self, ctx: AttemptContext) -> None:
                events.append(f"{name}.before")

            async def after_job(self, ctx: AttemptContext, result: Any) -> None:
                events.append(f"{name}.after")

        Layer.telemetry = telemetry
        Layer.order = order
        return Layer()

    app.middleware.add(layer("user1"))
    app.middleware.add(layer("user2"))
    app.middleware.add_builtin(layer("metrics", telemetry=True, order=30))
    app.middleware.add_builtin(layer("tracing", telemetry=True, order=10))

    @app.before_job
    def before(job_name: str, job_id: str, attempt: int) -> None:
        events.append("hook.before")

    @app.after_job
    def after(job_name: str, job_id: str, duration_ms: float) -> None:
        events.append("hook.after")

    @app.job()
    def work() -> None:
        events.append("job")

    job_id = await app.enqueue(work)
    async with running_worker(app):
        await wait_status(app, job_id, "done")
    assert events == [
        "tracing.before",
        "metrics.before",
        "user1.before",
        "user2.before",
        "hook.before",
        "job",
        "hook.after",
        "user2.after",
        "user1.after",
        "metrics.after",
        "tracing.after",
    ]


class Outcomes(Middleware):
    """An outer telemetry layer writing down the fate of each attempt as it unwinds."""

    telemetry = True
    order = 10

    def __init__(self) -> None:
        self.seen: list[AttemptContext] = []
        self.snapshots: list[tuple[Any, ...]] = []

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            return await call_next(ctx)
        finally:
            self.seen.append(ctx)
            self.snapshots.append((ctx.attempt, ctx.outcome, ctx.retry_delay, ctx.next_attempt_at))


async def test_outcome_done_reaches_outer_layers(app: Soniq) -> None:
    outer = Outcomes()
    app.middleware.add_builtin(outer)

    @app.job()
    async def fine() -> int:
        return 1

    job_id = await app.enqueue(fine)
    outcomes = await drain(app)
    assert [(o.job_id, o.outcome, o.result) for o in outcomes] == [(job_id, "done", 1)]
    assert outer.snapshots == [(1, "done", None, None)]


async def test_outcome_retry_carries_the_next_attempt_time(
    app: Soniq, db: asyncpg.Connection
) -> None:
    outer = Outcomes()
    app.middleware.add_builtin(outer)

    @app.job(max_retries=3, retry_backoff=60)
    async def flaky() -> None:
        raise ConnectionError("upstream down")

    job_id = await app.enqueue(flaky)
    async with running_worker(app):
        await wait_until(lambda: outer.snapshots, what="first attempt")

        async def requeued() -> asyncpg.Record | None:
            row = await db.fetchrow(
                "SELECT status, attempts, scheduled_at FROM soniq_jobs WHERE id = $1", job_id
            )
            return row if row is not None and row["status"] == "queued" else None

        row = await wait_until(requeued, what="the retry to be recorded")
    ((attempt, outcome, delay, next_at),) = outer.snapshots
    assert (attempt, outcome, delay) == (1, "retry", 60.0)
    assert row["attempts"] == 1
    # The time the chain announced is the time the database holds, give or take the round trip.
    assert abs(row["scheduled_at"] - next_at) < timedelta(seconds=5)


async def test_outcome_dead_letter_on_the_last_attempt(app: Soniq) -> None:
    outer = Outcomes()
    app.middleware.add_builtin(outer)

    @app.job(max_retries=2, retry_backoff=0)
    async def doomed() -> None:
        raise RuntimeError("always")

    job_id = await app.enqueue(doomed)
    outcomes = await drain(app)  # a retry due at once runs in the same drain
    assert [(o.job_id, o.outcome) for o in outcomes][-1] == (job_id, "dead_letter")
    assert [(s[0], s[1]) for s in outer.snapshots] == [
        (1, "retry"),
        (2, "retry"),
        (3, "dead_letter"),
    ]
    assert outer.snapshots[-1][2:] == (None, None)
    assert all(isinstance(s[3], type(outer.snapshots[0][3])) for s in outer.snapshots[:2])


async def test_an_inner_middleware_that_recovers_turns_the_outcome_to_done(app: Soniq) -> None:
    outer = Outcomes()
    app.middleware.add_builtin(outer)

    @app.middleware
    async def fallback(ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            return await call_next(ctx)
        except LookupError:
            assert ctx.outcome == "retry"  # inner layers had settled it already
            return "fallback"

    @app.job()
    async def lookup() -> None:
        raise KeyError("missing")

    job_id = await app.enqueue(lookup)
    async with running_worker(app):
        job = await wait_status(app, job_id, "done")
    assert job["result"] == "fallback"
    assert outer.snapshots == [(1, "done", None, None)]


# -- enqueue side -----------------------------------------------------------------------------


class TraceStamp(Middleware):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.calls: list[tuple[bool, list[str], int]] = []

    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        for job in ctx.jobs:
            job.trace_context["traceparent"] = f"00-{job.id.replace('-', '')}-0000000000000001-01"
        await call_next(ctx)
        # Observing after the write: the rows exist now.
        conn = await asyncpg.connect(self.database_url)
        try:
            written = await conn.fetchval(
                "SELECT count(*) FROM soniq_jobs WHERE id = ANY($1::uuid[])",
                [j.id for j in ctx.jobs],
            )
        finally:
            await conn.close()
        self.calls.append((ctx.batch, [j.job_name for j in ctx.jobs], written))


@pytest.fixture
def stamp(app: Soniq, clean_db: str) -> TraceStamp:
    mw = TraceStamp(clean_db)
    app.middleware.add(mw)
    return mw


async def test_enqueue_middleware_adds_data_stored_with_a_single_job(
    app: Soniq, db: asyncpg.Connection, stamp: TraceStamp
) -> None:
    carried: list[dict[str, str] | None] = []

    @app.job()
    async def traced() -> None:
        pass

    @app.middleware
    async def read_back(ctx: AttemptContext, call_next: CallNext) -> Any:
        carried.append(ctx.trace_context)
        return await call_next(ctx)

    job_id = await app.enqueue(traced)
    stored = await db.fetchval("SELECT trace_context::text FROM soniq_jobs WHERE id = $1", job_id)
    expected = {"traceparent": f"00-{job_id.replace('-', '')}-0000000000000001-01"}
    assert json.loads(stored) == expected
    assert stamp.calls == [(False, [_name(app, traced)], 1)]
    async with running_worker(app):
        await wait_status(app, job_id, "done")
    assert carried == [expected]


async def test_enqueue_middleware_wraps_a_batch_once(
    app: Soniq, db: asyncpg.Connection, stamp: TraceStamp
) -> None:
    @app.job()
    async def item(n: int) -> None:
        pass

    ids = await app.enqueue_many(item, [{"n": i} for i in range(3)])
    name = _name(app, item)
    assert stamp.calls == [(True, [name, name, name], 3)]
    rows = await db.fetch("SELECT id::text, trace_context::text FROM soniq_jobs")
    assert {r["id"]: json.loads(r["trace_context"])["traceparent"][3:35] for r in rows} == {
        i: i.replace("-", "") for i in ids
    }


async def test_plain_function_middleware_does_not_wrap_enqueue(app: Soniq) -> None:
    calls: list[str] = []

    @app.middleware
    async def job_only(ctx: AttemptContext, call_next: CallNext) -> Any:
        calls.append("job")
        return await call_next(ctx)

    @app.job()
    async def noop() -> None:
        pass

    await app.enqueue(noop)
    assert calls == []


# -- context variables ------------------------------------------------------------------------

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


async def test_contextvar_set_by_middleware_is_seen_by_jobs_and_hooks(app: Soniq) -> None:
    seen: dict[str, str | None] = {}

    handed_out: dict[str, Any] = {}

    @app.middleware
    async def set_request_id(ctx: AttemptContext, call_next: CallNext) -> Any:
        token = request_id.set(f"req-{ctx.args['label']}")
        try:
            return await call_next(ctx)
        finally:
            request_id.reset(token)
            handed_out[ctx.args["label"]] = ctx.state.get("from_job")

    @app.before_job
    async def async_hook(job_name: str, job_id: str, attempt: int) -> None:
        seen[f"async-hook-{job_id}"] = request_id.get()

    @app.after_job
    def sync_hook(job_name: str, job_id: str, duration_ms: float) -> None:
        seen[f"sync-hook-{job_id}"] = request_id.get()

    @app.on_error
    def error_hook(job_name: str, job_id: str, error: str, attempt: int) -> None:
        seen[f"error-hook-{job_id}"] = request_id.get()

    @app.job()
    async def async_job(label: str) -> None:
        seen["async-job"] = request_id.get()

    @app.job()
    def thread_job(label: str) -> None:  # runs in a worker thread
        seen["thread-job"] = request_id.get()
        attempt = current_attempt.get()
        assert attempt is not None
        attempt.state["from_job"] = "written in the thread"  # the way data goes outwards

    @app.job(timeout=30)
    async def timed_job(label: str) -> None:  # runs under asyncio.wait_for
        seen["timed-job"] = request_id.get()

    @app.job(max_retries=0)
    def failing_job(label: str) -> None:
        raise RuntimeError(label)

    ids = {
        "async": await app.enqueue(async_job, label="async"),
        "thread": await app.enqueue(thread_job, label="thread"),
        "timed": await app.enqueue(timed_job, label="timed"),
    }
    failing = await app.enqueue(failing_job, label="failing")
    async with running_worker(app, concurrency=4):
        for job_id in ids.values():
            await wait_status(app, job_id, "done")
        await wait_status(app, failing, "dead_letter")
    assert seen["async-job"] == "req-async"
    assert seen["thread-job"] == "req-thread"
    assert seen["timed-job"] == "req-timed"
    for label, job_id in ids.items():
        assert seen[f"async-hook-{job_id}"] == f"req-{label}"
        assert seen[f"sync-hook-{job_id}"] == f"req-{label}"
    assert seen[f"error-hook-{failing}"] == "req-failing"
    assert request_id.get() is None  # nothing leaked out of the attempt
    assert handed_out["thread"] == "written in the thread"


# -- failure policy ---------------------------------------------------------------------------


class BrokenTelemetry(Middleware):
    """A built-in-style layer that fails at a chosen point."""

    telemetry = True
    order = 10

    def __init__(self, where: str) -> None:
        self.where = where

    async def before_job(self, ctx: AttemptContext) -> None:
        if self.where == "before":
            raise RuntimeError("exporter down (before)")

    async def after_job(self, ctx: AttemptContext, result: Any) -> None:
        if self.where == "after":
            raise RuntimeError("exporter down (after)")

    async def on_error(self, ctx: AttemptContext, error: Exception) -> None:
        if self.where == "error":
            raise RuntimeError("exporter down (error)")


@pytest.mark.parametrize("where", ["before", "after", "error"])
async def test_a_raising_telemetry_middleware_never_fails_a_job(
    app: Soniq, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[tuple[Middleware, BaseException]] = []
    broken = BrokenTelemetry(where)
    app.middleware.add_builtin(broken)
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append((mw, exc)))
    runs: list[int] = []

    @app.job()
    async def succeeds() -> str:
        runs.append(1)
        return "ok"

    @app.job(max_retries=0)
    async def fails() -> None:
        raise ValueError("the job's own error")

    ok_id = await app.enqueue(succeeds)
    bad_id = await app.enqueue(fails)
    with caplog.at_level(logging.WARNING, logger="soniq"):
        async with running_worker(app):
            ok = await wait_status(app, ok_id, "done")
            bad = await wait_status(app, bad_id, "dead_letter")
    assert runs == [1]
    assert ok["result"] == "ok" and ok["attempts"] == 1
    assert bad["last_error"] == "ValueError: the job's own error"
    expected = {"before": 2, "after": 1, "error": 1}[where]
    assert len(reported) == expected
    assert all(mw is broken and f"({where})" in str(exc) for mw, exc in reported)
    warnings = [r for r in caplog.records if "Telemetry middleware" in r.getMessage()]
    assert len(warnings) == expected


class BrokenObserver(ObservingLayer):
    """A layer of two plain calls (what the built-in telemetry layers are) that fails in one."""

    order = 10

    def __init__(self, where: str) -> None:
        self.where = where
        self.ended: list[tuple[str | None, str | None]] = []

    def begin(self, ctx: AttemptContext) -> str:
        if self.where == "begin":
            raise RuntimeError("exporter down (begin)")
        return ctx.job_name

    def end(self, ctx: AttemptContext, state: str, error: BaseException | None) -> None:
        self.ended.append((ctx.outcome, type(error).__name__ if error else None))
        if self.where == "end":
            raise RuntimeError("exporter down (end)")


@pytest.mark.parametrize("where", ["begin", "end"])
async def test_a_raising_observing_layer_never_fails_a_job(app: Soniq, where: str) -> None:
    reported: list[tuple[Middleware, BaseException]] = []
    broken = BrokenObserver(where)
    app.middleware.add_builtin(broken)
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append((mw, exc)))

    @app.job()
    async def succeeds() -> str:
        return "ok"

    @app.job(max_retries=0)
    async def fails() -> None:
        try:
            raise KeyError("root cause")
        except KeyError as exc:
            raise ValueError("the job's own error") from exc

    ok_id = await app.enqueue(succeeds)
    bad_id = await app.enqueue(fails)
    async with running_worker(app):
        ok = await wait_status(app, ok_id, "done")
        bad = await wait_status(app, bad_id, "dead_letter")
    assert ok["result"] == "ok" and ok["attempts"] == 1
    assert bad["last_error"] == "ValueError: the job's own error"
    assert "KeyError: 'root cause'" in bad["traceback"]
    assert "exporter down" not in bad["traceback"]
    assert len(reported) == 2
    assert all(mw is broken and f"({where})" in str(exc) for mw, exc in reported)
    # end() sees each attempt's settled outcome and the job's own error, or is not called at
    # all when begin() failed (the attempt ran without the layer).
    expected = [] if where == "begin" else [("dead_letter", "ValueError"), ("done", None)]
    assert sorted(broken.ended, key=str) == sorted(expected, key=str)


async def test_a_telemetry_middleware_cannot_change_the_fate_of_an_attempt(app: Soniq) -> None:
    reported: list[BaseException] = []
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append(exc))

    class Swallower(Middleware):
        telemetry = True

        async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
            with contextlib.suppress(Exception):  # a bug: a telemetry layer must only observe
                await call_next(ctx)
            return "changed"

    class Skipper(Middleware):
        telemetry = True
        order = 200

        async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
            return None  # a bug: forgot to call the job

    app.middleware.add_builtin(Swallower())
    app.middleware.add_builtin(Skipper())
    ran: list[str] = []

    @app.job(max_retries=0)
    async def fails() -> None:
        ran.append("fails")
        raise ValueError("real failure")

    @app.job()
    async def works() -> str:
        ran.append("works")
        return "real result"

    bad_id = await app.enqueue(fails)
    ok_id = await app.enqueue(works)
    async with running_worker(app):
        bad = await wait_status(app, bad_id, "dead_letter")
        ok = await wait_status(app, ok_id, "done")
    assert bad["last_error"] == "ValueError: real failure"
    assert ok["result"] == "real result"
    assert sorted(ran) == ["fails", "works"]
    assert len(reported) == 2  # the skipper, once per job
    assert all("did not call call_next" in str(exc) for exc in reported)


async def test_a_telemetry_failure_keeps_the_jobs_own_traceback(app: Soniq) -> None:
    app.middleware.add_builtin(BrokenTelemetry("error"))

    @app.job(max_retries=0)
    async def chained() -> None:
        try:
            raise KeyError("root cause")
        except KeyError as exc:
            raise ValueError("surface") from exc

    job_id = await app.enqueue(chained)
    async with running_worker(app):
        job = await wait_status(app, job_id, "dead_letter")
    assert "KeyError: 'root cause'" in job["traceback"]
    assert "exporter down" not in job["traceback"]


async def test_a_raising_user_middleware_fails_the_attempt_like_a_job_error(app: Soniq) -> None:
    outer = Outcomes()
    app.middleware.add_builtin(outer)
    ran: list[int] = []

    @app.middleware
    async def gatekeeper(ctx: AttemptContext, call_next: CallNext) -> Any:
        raise PermissionError(f"denied attempt {ctx.attempt}")

    @app.job(max_retries=1, retry_backoff=0)
    async def guarded() -> None:
        ran.append(1)

    job_id = await app.enqueue(guarded)
    async with running_worker(app):
        job = await wait_status(app, job_id, "dead_letter")
    assert ran == []
    assert job["attempts"] == 2
    assert job["last_error"] == "PermissionError: denied attempt 2"
    assert [(s[0], s[1]) for s in outer.snapshots] == [(1, "retry"), (2, "dead_letter")]


async def test_a_user_middleware_raising_after_success_fails_the_attempt(app: Soniq) -> None:
    ran: list[int] = []

    class Validate(Middleware):
        async def after_job(self, ctx: AttemptContext, result: Any) -> None:
            if ctx.attempt == 1:
                raise ValueError("result rejected")

    app.middleware.add(Validate())

    @app.job(max_retries=1, retry_backoff=0)
    async def produce() -> int:
        ran.append(1)
        return len(ran)

    job_id = await app.enqueue(produce)
    async with running_worker(app):
        job = await wait_status(app, job_id, "done")
    assert ran == [1, 1]
    assert job["attempts"] == 2 and job["result"] == 2


async def test_enqueue_failure_policy(app: Soniq, db: asyncpg.Connection) -> None:
    reported: list[BaseException] = []
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append(exc))

    class CountEnqueues(Middleware):
        telemetry = True

        async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
            await call_next(ctx)
            raise RuntimeError("metrics backend down")

    app.middleware.add_builtin(CountEnqueues())

    @app.job()
    async def noop() -> None:
        pass

    job_id = await app.enqueue(noop)
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE id = $1", job_id) == 1
    assert [str(e) for e in reported] == ["metrics backend down"]

    class Refuse(Middleware):
        async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
            raise PermissionError("quota exceeded")

    app.middleware.add(Refuse())
    with pytest.raises(PermissionError, match="quota exceeded"):
        await app.enqueue(noop)
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 1


async def test_run_once_drains_a_retry_that_is_due_at_once(app: Soniq) -> None:
    """The outcome ``retry`` with no delay is claimed again at once, not after a poll interval,
    and a run_once worker does not stop with it still queued."""
    outer = Outcomes()
    app.middleware.add_builtin(outer)

    @app.job(max_retries=2, retry_backoff=0)
    async def twice() -> str:
        if len(outer.snapshots) < 1:
            raise RuntimeError("first attempt")
        return "second"

    job_id = await app.enqueue(twice)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    job = await app.get_job(job_id)
    assert job is not None
    assert (job["status"], job["attempts"], job["result"]) == ("done", 2, "second")
    assert [(s[0], s[1], s[2]) for s in outer.snapshots] == [(1, "retry", 0.0), (2, "done", None)]


# -- startup and shutdown -----------------------------------------------------------------------


def lifecycle_layer(
    name: str, log: list[str], *, fail: str = "", telemetry: bool = False, order: int = 100
) -> Middleware:
    class Layer(Middleware):
        @property
        def key(self) -> object:
            return name

        async def startup(self, worker: Any) -> None:
            log.append(f"{name}.startup")
            if fail == "startup":
                raise RuntimeError(f"{name} cannot start")

        async def shutdown(self, worker: Any) -> None:
            log.append(f"{name}.shutdown")
            if fail == "shutdown":
                raise RuntimeError(f"{name} cannot stop")

    Layer.telemetry = telemetry
    Layer.order = order
    return Layer()


async def test_startup_runs_outermost_first_and_shutdown_in_reverse(app: Soniq) -> None:
    log: list[str] = []
    app.middleware.add(lifecycle_layer("user", log))
    app.middleware.add_builtin(lifecycle_layer("tracing", log, telemetry=True, order=10))
    await app.run_worker(run_once=True, install_signal_handlers=False)
    assert log == ["tracing.startup", "user.startup", "user.shutdown", "tracing.shutdown"]


async def test_a_user_middleware_failing_at_startup_stops_the_worker_cleanly(
    app: Soniq, db: asyncpg.Connection
) -> None:
    log: list[str] = []
    app.middleware.add(lifecycle_layer("first", log))
    app.middleware.add(lifecycle_layer("broken", log, fail="startup"))
    app.middleware.add(lifecycle_layer("never", log))
    with pytest.raises(RuntimeError, match="broken cannot start"):
        await app.run_worker(install_signal_handlers=False)
    # Only what started is shut down; the worker is gone from the app and the database.
    assert log == ["first.startup", "broken.startup", "first.shutdown"]
    assert app.workers == []
    assert await db.fetchval("SELECT count(*) FROM soniq_workers") == 0


async def test_a_telemetry_middleware_failing_at_startup_is_reported(app: Soniq) -> None:
    log: list[str] = []
    reported: list[str] = []
    app.middleware.telemetry_error_listeners.append(lambda mw, exc: reported.append(str(exc)))
    app.middleware.add_builtin(lifecycle_layer("metrics", log, fail="startup", telemetry=True))

    @app.job()
    async def noop() -> None:
        pass

    job_id = await app.enqueue(noop)
    await app.run_worker(run_once=True, install_signal_handlers=False)
    assert await wait_status(app, job_id, "done")
    assert reported == ["metrics cannot start"]
    assert log == ["metrics.startup", "metrics.shutdown"]


async def test_a_failing_shutdown_still_shuts_down_the_other_layers(app: Soniq) -> None:
    log: list[str] = []
    app.middleware.add(lifecycle_layer("outer", log))
    app.middleware.add(lifecycle_layer("inner", log, fail="shutdown"))
    with pytest.raises(RuntimeError, match="inner cannot stop"):
        await app.run_worker(run_once=True, install_signal_handlers=False)
    assert log == ["outer.startup", "inner.startup", "inner.shutdown", "outer.shutdown"]
    assert app.workers == []
