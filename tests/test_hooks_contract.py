"""The hooks page (shared/seed/soniq-hooks.md) is a contract: one test (at least) per sentence.

Each test's docstring quotes the sentence it holds Soniq to. The page's practical examples are
run as files in tests/test_examples_hooks.py.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from typing import Any

import asyncpg
import pytest

from soniq import AttemptContext, CallNext, Middleware, Soniq
from soniq.errors import JobTimeout
from tests.support.waiting import running_worker, wait_status


async def run_until(app: Soniq, expected: dict[str, str], **worker: Any) -> dict[str, Any]:
    """Run a worker until every job id in ``expected`` has its expected status."""
    rows = {}
    async with running_worker(app, **worker):
        for job_id, status in expected.items():
            rows[job_id] = await wait_status(app, job_id, status)
    return rows


async def module_level_job(n: int) -> int:
    return n + 1


# -- "Hooks let you run code before and after every job, and when a job fails." ---------------


async def test_hooks_run_before_and_after_every_job_and_when_it_fails(app: Soniq) -> None:
    """Hooks let you run code before and after every job, and when a job fails."""
    calls: list[tuple[str, str]] = []

    @app.before_job
    async def before(job_name: str, job_id: str, attempt: int) -> None:
        calls.append(("before", job_id))

    @app.after_job
    async def after(job_name: str, job_id: str, duration_ms: float) -> None:
        calls.append(("after", job_id))

    @app.on_error
    async def error(job_name: str, job_id: str, error: str, attempt: int) -> None:
        calls.append(("error", job_id))

    @app.job()
    async def ok(n: int) -> None:
        pass

    @app.job(max_retries=0)
    async def bad() -> None:
        raise RuntimeError("bad")

    oks = await app.enqueue_many(ok, [{"n": i} for i in range(5)])
    bad_id = await app.enqueue(bad)
    await run_until(app, {**{i: "done" for i in oks}, bad_id: "dead_letter"}, concurrency=3)
    for job_id in oks:
        assert [c for c in calls if c[1] == job_id] == [("before", job_id), ("after", job_id)]
    assert [c for c in calls if c[1] == bad_id] == [("before", bad_id), ("error", bad_id)]


async def test_hooks_need_no_change_to_the_job_functions(app: Soniq) -> None:
    """They are useful for logging, metrics, tracing, and alerting without modifying your job
    functions."""
    observed: list[tuple[str, float]] = []

    def shipping_cost(weight_kg: float) -> float:  # knows nothing about Soniq or hooks
        return round(4.5 + 1.25 * weight_kg, 2)

    app.job(name="shipping.cost")(shipping_cost)

    @app.after_job
    def metric(job_name: str, job_id: str, duration_ms: float) -> None:
        observed.append((job_name, duration_ms))

    job_id = await app.enqueue("shipping.cost", weight_kg=2.0)
    rows = await run_until(app, {job_id: "done"})
    assert rows[job_id]["result"] == shipping_cost(2.0) == 7.0
    assert [name for name, _ in observed] == ["shipping.cost"]


# -- Registering hooks ------------------------------------------------------------------------


async def test_registering_example_prints_what_it_says(
    app: Soniq, capsys: pytest.CaptureFixture[str]
) -> None:
    """Use the decorator methods on your Soniq instance: (the page's three hooks, verbatim)"""

    @app.before_job
    async def log_start(job_name: str, job_id: str, attempt: int):  # type: ignore[no-untyped-def]
        print(f"Starting {job_name} ({job_id}), attempt {attempt}")

    @app.after_job
    async def log_success(job_name: str, job_id: str, duration_ms: float):  # type: ignore[no-untyped-def]
        print(f"Completed {job_name} ({job_id}) in {duration_ms}ms")

    @app.on_error
    async def log_failure(job_name: str, job_id: str, error: str, attempt: int):  # type: ignore[no-untyped-def]
        print(f"Failed {job_name} ({job_id}): {error} (attempt {attempt})")

    app.job(name="reports.build")(module_level_job)

    @app.job(name="reports.fail", max_retries=0)
    async def fail() -> None:
        raise ValueError("no data")

    ok_id = await app.enqueue("reports.build", n=1)
    bad_id = await app.enqueue("reports.fail")
    await run_until(app, {ok_id: "done", bad_id: "dead_letter"})
    out = capsys.readouterr().out.splitlines()
    assert f"Starting reports.build ({ok_id}), attempt 1" in out
    assert f"Starting reports.fail ({bad_id}), attempt 1" in out
    assert f"Failed reports.fail ({bad_id}): no data (attempt 1)" in out
    (completed,) = [line for line in out if line.startswith("Completed")]
    assert re.fullmatch(rf"Completed reports\.build \({ok_id}\) in \d+\.\d+(e-\d+)?ms", completed)


def test_the_decorators_return_the_function_unchanged(app: Soniq) -> None:
    """Use the decorator methods on your Soniq instance: each registers and gives the function
    back, so it can still be called or tested on its own."""

    def hook(*args: Any) -> None:
        pass

    assert app.before_job(hook) is hook
    assert app.after_job(hook) is hook
    assert app.on_error(hook) is hook
    assert app.hooks.before_job == [hook]
    assert app.hooks.after_job == [hook]
    assert app.hooks.on_error == [hook]


async def test_several_hooks_for_the_same_event_all_run(app: Soniq) -> None:
    """You can register multiple hooks for the same event."""
    counts = {"before": 0, "after": 0, "error": 0}

    for _ in range(3):

        @app.before_job
        def b(job_name: str, job_id: str, attempt: int) -> None:
            counts["before"] += 1

        @app.after_job
        def a(job_name: str, job_id: str, duration_ms: float) -> None:
            counts["after"] += 1

        @app.on_error
        def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
            counts["error"] += 1

    @app.job(max_retries=1, retry_backoff=0)
    async def flaky() -> None:
        raise RuntimeError("always")

    @app.job()
    async def fine() -> None:
        pass

    bad = await app.enqueue(flaky)
    ok = await app.enqueue(fine)
    await run_until(app, {bad: "dead_letter", ok: "done"})
    # flaky: 2 attempts, fine: 1 attempt; three hooks per event.
    assert counts == {"before": 9, "after": 3, "error": 6}


async def test_hooks_for_one_event_run_in_registration_order(app: Soniq) -> None:
    """They run in registration order. (Sync and async mixed; a slow first hook finishes before
    the second starts.)"""
    order: list[str] = []

    def register(event: str, index: int, slow: bool) -> None:
        async def async_hook(*args: Any) -> None:
            order.append(f"{event}{index}.start")
            await asyncio.sleep(0.05)
            order.append(f"{event}{index}.end")

        def sync_hook(*args: Any) -> None:
            order.append(f"{event}{index}.start")
            order.append(f"{event}{index}.end")

        getattr(app, event)(async_hook if slow else sync_hook)

    for event in ("before_job", "after_job", "on_error"):
        for index in range(3):
            register(event, index, slow=index % 2 == 0)

    @app.job()
    async def ok() -> None:
        order.append("job")

    @app.job(max_retries=0)
    async def bad() -> None:
        order.append("job")
        raise RuntimeError("x")

    ok_id = await app.enqueue(ok)
    await run_until(app, {ok_id: "done"})

    def run_of(event: str) -> list[str]:
        return [f"{event}{i}.{edge}" for i in range(3) for edge in ("start", "end")]

    assert order == [*run_of("before_job"), "job", *run_of("after_job")]
    order.clear()
    bad_id = await app.enqueue(bad)
    await run_until(app, {bad_id: "dead_letter"})
    assert order == [*run_of("before_job"), "job", *run_of("on_error")]


# -- Hook signatures: before_job ----------------------------------------------------------------


async def test_before_job_is_called_immediately_before_the_job_function(
    app: Soniq, db: asyncpg.Connection
) -> None:
    """@app.before_job: Called immediately before a job function executes. (Inside every
    middleware, with the job already claimed, and nothing of the job run yet.)"""
    events: list[Any] = []

    @app.middleware
    async def user_layer(ctx: AttemptContext, call_next: CallNext) -> Any:
        events.append("middleware")
        return await call_next(ctx)

    @app.before_job
    async def before(job_name: str, job_id: str, attempt: int) -> None:
        row = await db.fetchrow("SELECT status, attempts FROM soniq_jobs WHERE id = $1", job_id)
        events.append(("before_job", row["status"], row["attempts"]))

    @app.job()
    async def work() -> None:
        events.append("job")

    job_id = await app.enqueue(work)
    await run_until(app, {job_id: "done"})
    assert events == ["middleware", ("before_job", "processing", 1), "job"]


async def test_job_name_is_the_fully_qualified_module_function_name(app: Soniq) -> None:
    """job_name str Fully qualified job name (module.function). (The same in all three hooks:
    the registered name, which the registry looks up.)"""
    names: dict[str, set[str]] = {"before": set(), "after": set(), "error": set()}

    @app.before_job
    def b(job_name: str, job_id: str, attempt: int) -> None:
        names["before"].add(job_name)

    @app.after_job
    def a(job_name: str, job_id: str, duration_ms: float) -> None:
        names["after"].add(job_name)

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        names["error"].add(job_name)

    app.job(max_retries=0)(module_level_job)
    ok_id = await app.enqueue(module_level_job, n=1)
    bad_id = await app.enqueue(module_level_job, n="not a number")  # n + 1 raises TypeError
    await run_until(app, {ok_id: "done", bad_id: "dead_letter"})
    expected = "tests.test_hooks_contract.module_level_job"
    assert f"{module_level_job.__module__}.{module_level_job.__qualname__}" == expected
    assert names == {"before": {expected}, "after": {expected}, "error": {expected}}
    assert app._get_job_registry().get_job(expected) is not None


async def test_job_id_is_the_uuid_of_the_job(app: Soniq) -> None:
    """job_id str UUID of the job. (A str, the canonical form enqueue returned, in all hooks.)"""
    ids: list[tuple[str, Any]] = []

    @app.before_job
    def b(job_name: str, job_id: str, attempt: int) -> None:
        ids.append(("before", job_id))

    @app.after_job
    def a(job_name: str, job_id: str, duration_ms: float) -> None:
        ids.append(("after", job_id))

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        ids.append(("error", job_id))

    @app.job()
    async def ok() -> None:
        pass

    @app.job(max_retries=0)
    async def bad() -> None:
        raise RuntimeError("x")

    ok_id = await app.enqueue(ok)
    bad_id = await app.enqueue(bad)
    await run_until(app, {ok_id: "done", bad_id: "dead_letter"})
    assert sorted(ids) == sorted(
        [("before", ok_id), ("after", ok_id), ("before", bad_id), ("error", bad_id)]
    )
    for _, job_id in ids:
        assert type(job_id) is str
        assert str(uuid.UUID(job_id)) == job_id


async def test_attempt_is_the_current_attempt_number(app: Soniq, db: asyncpg.Connection) -> None:
    """attempt int Current attempt number. (1-based, and what the database counts.)"""
    seen: list[tuple[int, int]] = []

    @app.before_job
    async def b(job_name: str, job_id: str, attempt: int) -> None:
        in_db = await db.fetchval("SELECT attempts FROM soniq_jobs WHERE id = $1", job_id)
        seen.append((attempt, in_db))

    @app.job(max_retries=3, retry_backoff=0)
    async def third_time_lucky() -> None:
        if len(seen) < 3:
            raise RuntimeError("not yet")

    job_id = await app.enqueue(third_time_lucky)
    rows = await run_until(app, {job_id: "done"})
    assert seen == [(1, 1), (2, 2), (3, 3)]
    assert all(type(a) is int for a, _ in seen)
    assert rows[job_id]["attempts"] == 3


# -- Hook signatures: after_job -----------------------------------------------------------------


async def test_after_job_is_called_after_a_job_completes_successfully(app: Soniq) -> None:
    """@app.after_job: Called after a job completes successfully. (After the function returned,
    and never for a failed attempt.)"""
    events: list[str] = []

    @app.after_job
    def a(job_name: str, job_id: str, duration_ms: float) -> None:
        events.append(f"after_job:{job_name.rsplit('.', 1)[-1]}")

    @app.job(max_retries=1, retry_backoff=0)
    async def second_try() -> None:
        events.append("job")
        if events.count("job") == 1:
            raise RuntimeError("first attempt fails")
        events.append("job returns")

    job_id = await app.enqueue(second_try)
    await run_until(app, {job_id: "done"})
    assert events == ["job", "job", "job returns", "after_job:second_try"]


async def test_duration_ms_is_the_wall_clock_time_of_the_job_in_ms(app: Soniq) -> None:
    """duration_ms float Wall-clock execution time in milliseconds. (Of the job function alone:
    slow hooks and middlewares around it do not count.)"""
    durations: dict[str, float] = {}

    @app.middleware
    async def slow_middleware(ctx: AttemptContext, call_next: CallNext) -> Any:
        await asyncio.sleep(0.3)
        return await call_next(ctx)

    @app.before_job
    async def slow_hook(job_name: str, job_id: str, attempt: int) -> None:
        await asyncio.sleep(0.3)

    @app.after_job
    def record(job_name: str, job_id: str, duration_ms: float) -> None:
        durations[job_name.rsplit(".", 1)[-1]] = duration_ms

    @app.job()
    async def async_work() -> None:
        await asyncio.sleep(0.2)  # the measured workload

    @app.job()
    def thread_work() -> None:
        time.sleep(0.2)  # the measured workload, in a worker thread

    a = await app.enqueue(async_work)
    t = await app.enqueue(thread_work)
    await run_until(app, {a: "done", t: "done"}, concurrency=2)
    for name in ("async_work", "thread_work"):
        assert type(durations[name]) is float
        assert 195.0 <= durations[name] < 550.0, durations  # not the 600 ms of hooks around it


# -- Hook signatures: on_error ------------------------------------------------------------------


async def test_on_error_is_called_when_a_job_raises(app: Soniq) -> None:
    """@app.on_error: Called when a job raises an exception. (Any exception, in an async or a
    plain def job, and a timeout.)"""
    errors: list[tuple[str, str]] = []

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        errors.append((job_name.rsplit(".", 1)[-1], error))

    @app.job(max_retries=0)
    async def async_raises() -> None:
        raise LookupError("async")

    @app.job(max_retries=0)
    def thread_raises() -> None:
        raise OSError("thread")

    @app.job(max_retries=0, timeout=0.1)
    async def too_slow() -> None:
        await asyncio.Event().wait()

    @app.job()
    async def fine() -> None:
        pass

    ids = [await app.enqueue(j) for j in (async_raises, thread_raises, too_slow)]
    ok = await app.enqueue(fine)
    await run_until(app, {**{i: "dead_letter" for i in ids}, ok: "done"}, concurrency=4)
    assert sorted(errors) == sorted(
        [
            ("async_raises", "async"),
            ("thread_raises", "thread"),
            ("too_slow", str(JobTimeout(f"Job {_name(app, too_slow)} timed out after 0.1s"))),
        ]
    )


def _name(app: Soniq, func: Any) -> str:
    return next(spec.name for spec in app.registry if spec.func is func)


async def test_on_error_runs_before_the_retry_or_dead_letter_decision(
    app: Soniq, db: asyncpg.Connection
) -> None:
    """Runs before the retry/dead-letter decision. (The job is still 'processing' in the
    database and the attempt's outcome is not decided yet; outer layers see it decided.)"""
    contexts: dict[str, AttemptContext] = {}
    during: list[tuple[Any, ...]] = []
    after: list[Any] = []

    class Keep(Middleware):
        async def before_job(self, ctx: AttemptContext) -> None:
            contexts[ctx.job_id] = ctx

        async def on_error(self, ctx: AttemptContext, error: Exception) -> None:
            after.append(ctx.outcome)

    app.middleware.add(Keep())

    @app.on_error
    async def check(job_name: str, job_id: str, error: str, attempt: int) -> None:
        row = await db.fetchrow(
            "SELECT status, attempts, last_error, worker_id FROM soniq_jobs WHERE id = $1", job_id
        )
        ctx = contexts[job_id]
        during.append(
            (
                attempt,
                row["status"],
                row["attempts"],
                row["last_error"],
                row["worker_id"] is not None,
                ctx.outcome,
                ctx.next_attempt_at,
            )
        )

    @app.job(max_retries=1, retry_backoff=0)
    async def fails() -> None:
        raise RuntimeError("boom")

    job_id = await app.enqueue(fails)
    rows = await run_until(app, {job_id: "dead_letter"})
    assert during == [
        (1, "processing", 1, None, True, None, None),
        (2, "processing", 2, "RuntimeError: boom", True, None, None),
    ]
    assert after == ["retry", "dead_letter"]
    assert rows[job_id]["last_error"] == "RuntimeError: boom"


async def test_on_error_error_is_the_string_form_of_the_exception(app: Soniq) -> None:
    """error str String representation of the exception."""
    errors: list[Any] = []

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        errors.append(error)

    raised = [ValueError("plain message"), KeyError("key"), RuntimeError()]

    @app.job(max_retries=0)
    async def raise_it(i: int) -> None:
        raise raised[i]

    ids = await app.enqueue_many(raise_it, [{"i": i} for i in range(3)])
    await run_until(app, {i: "dead_letter" for i in ids}, concurrency=1)
    assert sorted(errors) == sorted(str(exc) for exc in raised)  # "plain message", "'key'", ""
    assert all(type(e) is str for e in errors)


async def test_on_error_attempt_is_the_attempt_that_failed(app: Soniq) -> None:
    """attempt int The attempt number that failed."""
    failed: list[int] = []
    ran: list[int] = []

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        failed.append(attempt)

    @app.job(max_retries=4, retry_backoff=0)
    async def fails_twice() -> None:
        ran.append(1)
        if len(ran) <= 2:
            raise RuntimeError(f"attempt {len(ran)}")

    job_id = await app.enqueue(fails_twice)
    await run_until(app, {job_id: "done"})
    assert failed == [1, 2]
    assert len(ran) == 3


# -- Execution order ----------------------------------------------------------------------------


def _order_hooks(app: Soniq, events: list[str]) -> None:
    @app.before_job
    def b(job_name: str, job_id: str, attempt: int) -> None:
        events.append("before_job")

    @app.after_job
    def a(job_name: str, job_id: str, duration_ms: float) -> None:
        events.append("after_job")

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        events.append("on_error")


async def test_success_order_is_before_job_job_after_job(app: Soniq) -> None:
    """For a successful job: before_job -> job function -> after_job"""
    events: list[str] = []
    _order_hooks(app, events)

    @app.job()
    def job() -> None:
        events.append("job function")

    job_id = await app.enqueue(job)
    await run_until(app, {job_id: "done"})
    assert events == ["before_job", "job function", "after_job"]


async def test_failure_order_is_before_job_job_raises_on_error(app: Soniq) -> None:
    """For a failed job: before_job -> job function (raises) -> on_error"""
    events: list[str] = []
    _order_hooks(app, events)

    @app.job(max_retries=0)
    async def job() -> None:
        events.append("job function")
        raise RuntimeError("raises")

    job_id = await app.enqueue(job)
    await run_until(app, {job_id: "dead_letter"})
    assert events == ["before_job", "job function", "on_error"]


async def test_after_job_and_on_error_are_mutually_exclusive(app: Soniq) -> None:
    """after_job and on_error are mutually exclusive for a given execution. (Also when an
    after_job hook raises, or a middleware fails the attempt after the job returned.)"""
    seen: dict[tuple[str, int], list[str]] = {}
    attempts: dict[str, int] = {}

    @app.before_job
    def b(job_name: str, job_id: str, attempt: int) -> None:
        attempts[job_id] = attempt
        seen[(job_id, attempt)] = []

    @app.after_job
    def a(job_name: str, job_id: str, duration_ms: float) -> None:
        seen[(job_id, attempts[job_id])].append("after_job")
        raise RuntimeError("after_job hook itself fails")

    @app.on_error
    def e(job_name: str, job_id: str, error: str, attempt: int) -> None:
        seen[(job_id, attempt)].append("on_error")

    @app.middleware
    async def reject_odd(ctx: AttemptContext, call_next: CallNext) -> Any:
        result = await call_next(ctx)
        if result == "reject" and ctx.attempt == 1:
            raise ValueError("middleware rejects the result")
        return result

    @app.job(max_retries=1, retry_backoff=0)
    async def mixed(kind: str) -> str:
        if kind == "fail":
            raise RuntimeError("fails")
        if kind == "timeout":
            await asyncio.Event().wait()
        return kind

    app.job(name="mixed.timeout", max_retries=0, timeout=0.1)(mixed)
    ids = {kind: await app.enqueue(mixed, kind=kind) for kind in ("ok", "fail", "reject")}
    ids["timeout"] = await app.enqueue("mixed.timeout", kind="timeout")
    await run_until(
        app,
        {
            ids["ok"]: "done",
            ids["fail"]: "dead_letter",
            ids["reject"]: "done",
            ids["timeout"]: "dead_letter",
        },
        concurrency=4,
    )
    for (job_id, attempt), events in seen.items():
        assert events in (["after_job"], ["on_error"]), (job_id, attempt, events)
    assert seen[(ids["reject"], 1)] == ["after_job"]  # the hook saw the job succeed
    assert seen[(ids["fail"], 2)] == ["on_error"]
    assert seen[(ids["timeout"], 1)] == ["on_error"]


async def test_before_job_always_runs_even_if_the_job_will_fail(app: Soniq) -> None:
    """before_job always runs, even if the job will ultimately fail."""
    before: list[int] = []

    @app.before_job
    def b(job_name: str, job_id: str, attempt: int) -> None:
        before.append(attempt)

    @app.job(max_retries=2, retry_backoff=0)
    def doomed() -> None:
        raise RuntimeError("always")

    job_id = await app.enqueue(doomed)
    rows = await run_until(app, {job_id: "dead_letter"})
    assert before == [1, 2, 3]
    assert rows[job_id]["attempts"] == 3


# -- Sync and async hooks -----------------------------------------------------------------------


async def test_hooks_can_be_sync_or_async(app: Soniq) -> None:
    """Hooks can be either sync or async. (The page's two examples, with stand-ins for the
    operations they call.)"""
    done: list[str] = []

    async def some_async_operation() -> None:
        await asyncio.sleep(0)
        done.append("async")

    def some_sync_operation() -> None:
        done.append("sync")

    # Async hook
    @app.before_job
    async def async_hook(job_name, job_id, attempt):  # type: ignore[no-untyped-def]
        await some_async_operation()

    # Sync hook works too
    @app.before_job
    def sync_hook(job_name, job_id, attempt):  # type: ignore[no-untyped-def]
        some_sync_operation()

    @app.job()
    async def job() -> None:
        done.append("job")

    job_id = await app.enqueue(job)
    await run_until(app, {job_id: "done"})
    assert done == ["async", "sync", "job"]


class AsyncCallable:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def __call__(self, job_name: str, job_id: str, attempt: int) -> None:
        await asyncio.sleep(0)
        self.log.append("async __call__")


async def test_each_hook_is_inspected_at_call_time_and_awaited_if_needed(app: Soniq) -> None:
    """Soniq inspects each hook at call time and awaits it if it is a coroutine function. (Also
    an object with an async __call__, a partial of an async function, and a hook that is sync on
    one call and returns a coroutine on the next.)"""
    log: list[str] = []

    async def tagged(tag: str, job_name: str, job_id: str, attempt: int) -> None:
        await asyncio.sleep(0)
        log.append(tag)

    def sometimes_async(job_name: str, job_id: str, attempt: int) -> Awaitable[None] | None:
        if attempt == 1:
            log.append("sync this time")
            return None
        return tagged("async this time", job_name, job_id, attempt)

    app.before_job(AsyncCallable(log))
    app.before_job(functools.partial(tagged, "partial"))
    app.before_job(sometimes_async)

    @app.job(max_retries=1, retry_backoff=0)
    async def job() -> None:
        log.append("job")
        if log.count("job") == 1:
            raise RuntimeError("again")

    job_id = await app.enqueue(job)
    await run_until(app, {job_id: "done"})
    assert log == [
        "async __call__",
        "partial",
        "sync this time",
        "job",
        "async __call__",
        "partial",
        "async this time",
        "job",
    ]


# -- Error handling in hooks --------------------------------------------------------------------


def _hook_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("Hook ")
    ]


async def test_a_raising_hook_is_logged_as_a_warning_and_soniq_continues(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    """If a hook raises an exception, Soniq logs a warning and continues. (For all three events;
    the hooks registered after the broken one still run.)"""
    ran: list[str] = []

    for event in ("before_job", "after_job", "on_error"):

        def broken(*args: Any, _event: str = event) -> None:
            raise ConnectionError(f"{_event} backend down")

        async def healthy(*args: Any, _event: str = event) -> None:
            ran.append(_event)

        getattr(app, event)(broken)
        getattr(app, event)(healthy)

    @app.job()
    async def ok() -> None:
        pass

    @app.job(max_retries=0)
    async def bad() -> None:
        raise RuntimeError("job error")

    ok_id = await app.enqueue(ok)
    bad_id = await app.enqueue(bad)
    with caplog.at_level(logging.WARNING, logger="soniq"):
        await run_until(app, {ok_id: "done", bad_id: "dead_letter"})
    assert sorted(ran) == sorted(["before_job", "after_job", "before_job", "on_error"])
    assert sorted(_hook_warnings(caplog)) == sorted(
        [
            "Hook before_job failed: ConnectionError('before_job backend down')",
            "Hook before_job failed: ConnectionError('before_job backend down')",
            "Hook after_job failed: ConnectionError('after_job backend down')",
            "Hook on_error failed: ConnectionError('on_error backend down')",
        ]
    )
    # Which hook failed is on the record too, for structured logs.
    hooks = {getattr(r, "hook", None) for r in caplog.records if r.getMessage().startswith("Hook")}
    assert hooks == {
        f"{test_a_raising_hook_is_logged_as_a_warning_and_soniq_continues.__name__}.<locals>.broken"
    }


async def test_a_broken_hook_never_prevents_running_or_recording(app: Soniq) -> None:
    """A broken hook never prevents a job from running or its result from being recorded. (Each
    event, sync and async hooks: the job runs, its result or error is stored, retries and the
    dead-letter queue work as without hooks.)"""
    ran: list[str] = []

    @app.before_job
    def broken_before(job_name: str, job_id: str, attempt: int) -> None:
        raise ConnectionError("before")

    @app.after_job
    async def broken_after(job_name: str, job_id: str, duration_ms: float) -> None:
        raise ConnectionError("after")

    @app.on_error
    async def broken_error(job_name: str, job_id: str, error: str, attempt: int) -> None:
        raise ConnectionError("error")

    @app.job()
    async def compute(x: int) -> dict[str, int]:
        ran.append("compute")
        return {"square": x * x}

    @app.job(max_retries=1, retry_backoff=0)
    def fails() -> None:
        ran.append("fails")
        raise ValueError("job's own error")

    ok_id = await app.enqueue(compute, x=7)
    bad_id = await app.enqueue(fails)
    rows = await run_until(app, {ok_id: "done", bad_id: "dead_letter"})
    assert sorted(ran) == ["compute", "fails", "fails"]
    assert rows[ok_id]["result"] == {"square": 49}
    assert rows[bad_id]["attempts"] == 2
    assert rows[bad_id]["last_error"] == "ValueError: job's own error"
    assert "ConnectionError" not in (rows[bad_id]["traceback"] or "")


async def test_the_warning_has_the_pages_form(app: Soniq) -> None:
    """WARNING - Hook before_job failed: ConnectionError(...)"""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s - %(message)s"))
    soniq_logger = logging.getLogger("soniq")
    soniq_logger.addHandler(handler)
    previous = soniq_logger.level
    soniq_logger.setLevel(logging.WARNING)

    @app.before_job
    async def flaky_metrics(job_name: str, job_id: str, attempt: int) -> None:
        raise ConnectionError("metrics server unreachable")

    @app.job()
    async def job() -> None:
        pass

    try:
        job_id = await app.enqueue(job)
        await run_until(app, {job_id: "done"})
    finally:
        soniq_logger.removeHandler(handler)
        soniq_logger.setLevel(previous)
    lines = [line for line in stream.getvalue().splitlines() if "Hook" in line]
    assert lines == [
        "WARNING - Hook before_job failed: ConnectionError('metrics server unreachable')"
    ]
    assert re.fullmatch(r"WARNING - Hook before_job failed: ConnectionError\(.*\)", lines[0])


async def test_hooks_are_safe_for_metrics_and_logging(app: Soniq, clean_db: str) -> None:
    """This means hooks are safe for non-critical operations like metrics and logging. (Jobs end
    the same with every hook of every kind failing as with no hooks at all.)"""

    async def outcomes(with_broken_hooks: bool) -> list[tuple[str, int, Any]]:
        soniq = Soniq(clean_db, poll_interval=0.5, lease_seconds=3)
        try:
            if with_broken_hooks:
                for event in ("before_job", "after_job", "on_error"):

                    def sync_broken(*args: Any) -> None:
                        raise ConnectionError("statsd")

                    async def async_broken(*args: Any) -> None:
                        raise TimeoutError("log shipper")

                    getattr(soniq, event)(sync_broken)
                    getattr(soniq, event)(async_broken)
            failed_once: set[int] = set()

            @soniq.job(name="safety.job", max_retries=1, retry_backoff=0)
            async def job(n: int) -> int:
                if n % 3 == 0:
                    raise RuntimeError("always")
                if n % 3 == 1 and n not in failed_once:
                    failed_once.add(n)
                    raise RuntimeError("once")
                return n * 10

            ids = await soniq.enqueue_many(job, [{"n": n} for n in range(6)])
            expected = {i: ("dead_letter" if n % 3 == 0 else "done") for n, i in enumerate(ids)}
            rows = await run_until(soniq, expected, concurrency=3)
            return [(rows[i]["status"], rows[i]["attempts"], rows[i]["result"]) for i in ids]
        finally:
            await soniq.close()

    assert await outcomes(with_broken_hooks=True) == await outcomes(with_broken_hooks=False)


async def test_a_hook_cannot_stop_a_job_the_job_function_must(app: Soniq) -> None:
    """If you need a hook failure to stop job execution, handle that logic inside the job
    function itself."""
    ran: list[str] = []
    quota = {"left": 0}

    @app.before_job
    def enforce_quota(job_name: str, job_id: str, attempt: int) -> None:
        if quota["left"] <= 0:
            raise PermissionError("quota exhausted")  # logged; does not stop the job

    @app.job()
    async def unguarded() -> None:
        ran.append("unguarded")

    @app.job(max_retries=0)
    async def guarded() -> None:
        if quota["left"] <= 0:  # the check where it has effect
            raise PermissionError("quota exhausted")
        ran.append("guarded")

    u = await app.enqueue(unguarded)
    g = await app.enqueue(guarded)
    rows = await run_until(app, {u: "done", g: "dead_letter"})
    assert ran == ["unguarded"]
    assert rows[g]["last_error"] == "PermissionError: quota exhausted"


# -- The page's dead-letter alert (issue 3, point 6) ------------------------------------------


async def test_dead_letter_alert_fires_once_on_the_final_attempt_only(app: Soniq) -> None:
    """Slack alerting on dead-letter: ``attempt >= job_meta["max_retries"] + 1`` fires exactly
    once, on the last attempt; never for a job that recovers, nor on earlier attempts."""
    sent: list[str] = []

    async def send_slack_message(text: str) -> None:
        sent.append(text)

    @app.on_error
    async def alert_on_final_failure(job_name, job_id, error, attempt):  # type: ignore[no-untyped-def]
        # Look up the job's max_attempts from the registry
        job_meta = app._get_job_registry().get_job(job_name)
        if job_meta and attempt >= job_meta["max_retries"] + 1:
            await send_slack_message(
                f"Job {job_name} ({job_id}) moved to dead-letter queue: {error}"
            )

    recovering: list[int] = []

    @app.job(name="billing.charge", max_retries=2, retry_backoff=0)
    async def charge() -> None:
        raise RuntimeError("card declined")

    @app.job(name="billing.sync", max_retries=2, retry_backoff=0)
    async def sync() -> None:
        recovering.append(1)
        if len(recovering) < 3:
            raise RuntimeError("transient")

    @app.job(name="billing.once", max_retries=0)
    async def once() -> None:
        raise RuntimeError("no retries")

    charge_id = await app.enqueue(charge)
    sync_id = await app.enqueue(sync)
    once_id = await app.enqueue(once)
    rows = await run_until(app, {charge_id: "dead_letter", sync_id: "done", once_id: "dead_letter"})
    assert sorted(sent) == sorted(
        [
            f"Job billing.charge ({charge_id}) moved to dead-letter queue: card declined",
            f"Job billing.once ({once_id}) moved to dead-letter queue: no retries",
        ]
    )
    assert rows[charge_id]["attempts"] == 3 and rows[sync_id]["attempts"] == 3
