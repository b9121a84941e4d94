"""Issue 19: inline mode runs each enqueued job at once, through the real chain, no database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from soniq import AttemptContext, CallNext, ConfigurationError, JobArgumentsError, Soniq
from soniq.testing import Clock, DrainLimitExceeded, inline

# Nothing listens there: any attempt to use the database would fail the test.
NO_DATABASE = "postgresql://nobody@127.0.0.1:9/none"


class Boom(Exception):
    pass


@pytest.fixture
def app() -> Iterator[Soniq]:
    yield Soniq(NO_DATABASE)


@pytest.fixture
def clock() -> Iterator[Clock]:
    with Clock() as c:
        yield c


async def test_enqueue_runs_the_job_through_middlewares_and_hooks_with_stored_arguments(
    app: Soniq,
) -> None:
    seen: list[Any] = []

    @app.middleware
    async def outer(ctx: AttemptContext, call_next: CallNext) -> Any:
        seen.append(("middleware", ctx.attempt, ctx.worker_id))
        return await call_next(ctx)

    @app.before_job
    def before(name: str, job_id: str, attempt: int) -> None:
        seen.append(("before_job", name, attempt))

    @app.after_job
    def after(name: str, job_id: str, duration_ms: float) -> None:
        seen.append(("after_job", name))

    @app.job(name="add")
    async def add(numbers: list[int], labels: dict[str, str]) -> dict[str, Any]:
        seen.append(("job", numbers, labels))
        return {"sum": sum(numbers), "pair": (1, 2)}

    with inline(app) as run:
        # A tuple and an int key come back as JSON gives them: a list and a string key.
        job_id = await app.enqueue(add, numbers=(1, 2, 3), labels={7: "seven"})  # type: ignore[dict-item]

    assert seen == [
        ("middleware", 1, "soniq.testing"),
        ("before_job", "add", 1),
        ("job", [1, 2, 3], {"7": "seven"}),
        ("after_job", "add"),
    ]
    [outcome] = run.outcomes
    assert (outcome.job_name, outcome.job_id, outcome.attempt, outcome.outcome) == (
        "add",
        job_id,
        1,
        "done",
    )
    assert outcome.result == {"sum": 6, "pair": [1, 2]}  # as the database would keep it
    assert outcome.error is None


async def test_failures_retry_at_once_up_to_the_jobs_attempts(app: Soniq) -> None:
    calls: list[int] = []
    errors: list[tuple[str, int]] = []

    @app.on_error
    def on_error(name: str, job_id: str, error: str, attempt: int) -> None:
        errors.append((error, attempt))

    @app.job(name="flaky", max_retries=3, retry_backoff=3600)
    def flaky() -> str:  # a plain def: runs in a thread, as the worker runs it
        calls.append(1)
        if len(calls) < 3:
            raise Boom(f"try {len(calls)}")
        return "ok"

    @app.job(name="doomed", max_retries=1)
    async def doomed() -> None:
        raise Boom("always")

    with inline(app) as run:
        await app.enqueue(flaky)
        await app.enqueue(doomed)

    assert [(o.job_name, o.attempt, o.outcome) for o in run.outcomes] == [
        ("flaky", 1, "retry"),
        ("flaky", 2, "retry"),
        ("flaky", 3, "done"),
        ("doomed", 1, "retry"),
        ("doomed", 2, "dead_letter"),
    ]
    assert run.outcomes.of(flaky).results() == ["ok"]
    assert isinstance(run.outcomes.of("doomed")[-1].error, Boom)
    assert errors == [("try 1", 1), ("try 2", 2), ("always", 1), ("always", 2)]
    assert run.outcomes.failed[0].retry_delay == 3600
    with pytest.raises(AssertionError, match=r"4 of 5 attempt\(s\) did not succeed"):
        run.outcomes.assert_all_done()


async def test_jobs_enqueued_by_a_job_run_after_it_and_enqueue_many_runs_each(app: Soniq) -> None:
    order: list[str] = []

    @app.job(name="child")
    async def child(n: int) -> None:
        order.append(f"child {n}")

    @app.job(name="parent")
    async def parent() -> None:
        await app.enqueue_many(child, [{"n": 1}, {"n": 2}])
        order.append("parent done")

    with inline(app) as run:
        await app.enqueue(parent)

    assert order == ["parent done", "child 1", "child 2"]
    assert [j.enqueued_by for j in run.all] == [None, "parent", "parent"]


async def test_connection_is_refused_with_the_reason(app: Soniq) -> None:
    @app.job(name="noop")
    async def noop() -> None:
        pass

    with inline(app) as run, pytest.raises(ConfigurationError, match="no transaction to join"):
        await app.enqueue(noop, connection=object())  # type: ignore[arg-type]
    assert run.outcomes == []


async def test_a_job_that_keeps_enqueuing_stops_at_the_bound_and_says_so(app: Soniq) -> None:
    @app.job(name="again")
    async def again() -> None:
        await app.enqueue(again)

    limit = r"ran 25 attempts.*again \(enqueued by again\)"
    with inline(app, max_runs=25) as run, pytest.raises(DrainLimitExceeded, match=limit):
        await app.enqueue(again)
    assert len(run.outcomes) == 25


async def test_delayed_jobs_wait_for_the_clock(app: Soniq, clock: Clock) -> None:
    @app.job(name="later")
    async def later() -> str:
        return "ran"

    with inline(app) as run:
        await app.enqueue(later, scheduled_at=timedelta(hours=1))
        assert run.outcomes == [] and [j.job_name for j in run.scheduled] == ["later"]
        assert await run.drain() == []
        await clock.advance(3599)
        assert await run.drain() == []
        await clock.advance(1)
        outcomes = await run.drain()
    assert [(o.job_name, o.result) for o in outcomes] == [("later", "ran")]
    assert run.scheduled == []


async def test_bad_arguments_fail_the_enqueue_as_without_the_kit(app: Soniq) -> None:
    @app.job(name="typed")
    async def typed(x: int) -> None:
        pass

    with inline(app) as run:
        with pytest.raises(JobArgumentsError, match="cannot take these arguments"):
            await app.enqueue(typed, y=1)
        with pytest.raises(JobArgumentsError, match="not JSON-serialisable"):
            await app.enqueue(typed, x=object())
    assert run.outcomes == [] and run.all == []


async def test_one_mode_at_a_time_and_the_database_writer_comes_back(app: Soniq) -> None:
    database_writer = app.writer
    with inline(app):
        assert app.writer is not database_writer
        with pytest.raises(ConfigurationError, match=r"already under soniq\.testing\.inline"):
            inline(app).__enter__()
    assert app.writer == database_writer


async def test_a_snoozed_job_is_held_for_its_delay_not_rerun_at_once(
    app: Soniq, clock: Clock
) -> None:
    """Job control settles ``snoozed`` with a delay in the chain; inline waits it out."""

    @app.middleware
    async def snooze(ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            return await call_next(ctx)
        except Boom as exc:
            ctx.outcome, ctx.error, ctx.retry_delay = "snoozed", exc, 30.0
            raise

    @app.job(name="sleepy")
    async def sleepy() -> None:
        raise Boom("later")

    with inline(app) as run:
        await app.enqueue(sleepy)
        assert [o.outcome for o in run.outcomes] == ["snoozed"]
        assert [j.job_name for j in run.scheduled] == ["sleepy"]
        await clock.advance(30)
        assert [o.outcome for o in await run.drain()] == ["snoozed"]
