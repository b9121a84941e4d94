"""Issue 19: capture mode records enqueues, asserts on them, and drains them through the chain."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from soniq import (
    AttemptContext,
    CallNext,
    ConfigurationError,
    EnqueueContext,
    EnqueueNext,
    Middleware,
    Soniq,
    UnknownJobError,
)
from soniq.testing import Clock, DrainLimitExceeded, OutcomeName, capture, drain

NO_DATABASE = "postgresql://nobody@127.0.0.1:9/none"


class Boom(Exception):
    pass


@pytest.fixture
def clock() -> Iterator[Clock]:
    with Clock() as c:
        yield c


@pytest.fixture
def app() -> Soniq:
    app = Soniq(NO_DATABASE)

    @app.job(name="shop.receipt", queue="emails")
    async def receipt(order_id: int, email: str, lines: list[str] | None = None) -> str:
        return f"receipt {order_id} to {email}"

    @app.job(name="shop.order")
    async def order(order_id: int) -> None:
        await app.enqueue("shop.receipt", order_id=order_id, email="ada@example.com")

    return app


async def test_enqueues_are_recorded_not_run_and_asserted_by_the_arguments_given(
    app: Soniq,
) -> None:
    ran: list[str] = []

    @app.before_job
    def before(name: str, job_id: str, attempt: int) -> None:
        ran.append(name)

    with capture(app) as jobs:
        job_id = await app.enqueue("shop.receipt", order_id=7, email="a@x", lines=("tea",))
        await app.enqueue("shop.receipt", order_id=8, email="b@x", scheduled_at=90)

    assert ran == []
    assert jobs.all[0].id == job_id and len(jobs.all) == 2
    found = jobs.assert_enqueued("shop.receipt", order_id=7)
    assert found.args == {"order_id": 7, "email": "a@x", "lines": ["tea"]}
    jobs.assert_enqueued("shop.receipt", lines=("tea",), queue="emails")  # as stored: a list
    jobs.assert_enqueued("shop.receipt", order_id=8, scheduled_in=timedelta(seconds=90))
    jobs.assert_not_enqueued("shop.order")
    jobs.assert_not_enqueued("shop.receipt", order_id=9)


async def test_a_failed_assertion_shows_what_was_enqueued_instead(app: Soniq) -> None:
    with capture(app) as jobs:
        with pytest.raises(AssertionError, match="nothing was enqueued"):
            jobs.assert_enqueued("shop.receipt", order_id=1)
        await app.enqueue("shop.receipt", order_id=2, email="b@x")
        await app.enqueue("shop.order", order_id=3)

    with pytest.raises(AssertionError) as failed:
        jobs.assert_enqueued("shop.receipt", order_id=1, queue="default", scheduled_in=60)
    assert str(failed.value) == (
        "Expected an enqueue of shop.receipt(order_id=1) on queue 'default' scheduled in 60s; "
        "enqueued instead (2):\n"
        "  - shop.receipt(order_id=2, email='b@x') queue='emails'\n"
        "  - shop.order(order_id=3) queue='default'"
    )
    with pytest.raises(AssertionError, match=r"Expected no enqueue of shop\.order\(\); found 1"):
        jobs.assert_not_enqueued("shop.order")


async def test_drain_runs_the_jobs_and_the_jobs_they_enqueue(app: Soniq) -> None:
    with capture(app) as jobs:
        await app.enqueue("shop.order", order_id=5)
        outcomes = await jobs.drain()
        assert await jobs.drain() == []  # nothing left

    assert [(o.job_name, o.outcome) for o in outcomes] == [
        ("shop.order", "done"),
        ("shop.receipt", "done"),
    ]
    assert outcomes.results("shop.receipt") == ["receipt 5 to ada@example.com"]
    receipt = jobs.assert_enqueued("shop.receipt", order_id=5, queue="emails")
    assert receipt.enqueued_by == "shop.order"
    assert jobs.pending == []


async def test_enqueue_middlewares_run_before_the_job_is_recorded(app: Soniq) -> None:
    class Tagging(Middleware):
        async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
            for job in ctx.jobs:
                job.trace_context["tag"] = "seen"
            await call_next(ctx)

    app.middleware.add(Tagging)
    with capture(app) as jobs:
        await app.enqueue_many("shop.receipt", [{"order_id": 1, "email": "a@x"}])
    assert jobs.all[0].trace_context == {"tag": "seen"}


async def test_retries_wait_out_their_backoff_on_the_clock(app: Soniq, clock: Clock) -> None:
    attempts: list[int] = []

    @app.job(name="flaky", max_retries=2, retry_backoff=30)
    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise Boom("not yet")
        return "ok"

    with capture(app) as jobs:
        await app.enqueue(flaky)
        first = await jobs.drain()
        assert [(o.outcome, o.retry_delay) for o in first] == [("retry", 30)]
        assert await jobs.drain() == []  # the retry is not due
        await clock.advance(30)
        second = await jobs.drain()
        assert [(o.attempt, o.outcome) for o in second] == [(2, "retry")]
        everything = await jobs.drain(with_scheduled=True)
    assert [(o.attempt, o.outcome, o.result) for o in everything] == [(3, "done", "ok")]
    assert [o.outcome for o in jobs.outcomes] == ["retry", "retry", "done"]


async def test_a_drain_whose_jobs_keep_enqueuing_stops_and_says_so(app: Soniq) -> None:
    @app.job(name="ping")
    async def ping() -> None:
        await app.enqueue("pong")

    @app.job(name="pong")
    async def pong() -> None:
        await app.enqueue(ping)

    with capture(app) as jobs:
        await app.enqueue(ping)
        with pytest.raises(DrainLimitExceeded) as stopped:
            await jobs.drain(max_runs=50)
    assert "ran 50 attempts (max_runs=50) and jobs are still coming" in str(stopped.value)
    assert "ping (enqueued by pong)" in str(stopped.value)
    assert len(jobs.outcomes) == 50


async def test_connection_is_refused_with_the_reason(app: Soniq) -> None:
    conn: Any = object()
    with capture(app) as jobs, pytest.raises(ConfigurationError, match="writes nothing"):
        await app.enqueue("shop.order", order_id=1, connection=conn)
    assert jobs.all == []


async def test_an_unregistered_job_in_an_assertion_names_the_fix(app: Soniq) -> None:
    with capture(app) as jobs, pytest.raises(UnknownJobError, match="No job named 'nope'"):
        jobs.assert_enqueued("nope")


async def test_a_database_drain_under_capture_points_to_the_blocks_own(app: Soniq) -> None:
    with capture(app), pytest.raises(ConfigurationError, match=r"`await jobs\.drain\(\)`"):
        await drain(app)


@pytest.mark.parametrize("fate", ["snoozed", "cancelled"])
async def test_outcomes_settled_as_snoozed_or_cancelled_are_reported_as_such(
    app: Soniq, fate: OutcomeName
) -> None:
    """Snoozing and cancelling a running job settle these fates in the chain (job control);
    the kit reports them, and puts a snoozed job back for its delay."""

    class Settle(Middleware):
        async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
            try:
                return await call_next(ctx)
            except Boom as exc:
                ctx.outcome, ctx.error, ctx.retry_delay = fate, exc, 5.0
                raise

    @app.job(name="settles")
    async def settles() -> None:
        raise Boom(fate)

    app.middleware.add(Settle)
    with capture(app) as jobs:
        await app.enqueue(settles)
        [outcome] = await jobs.drain()
    assert (outcome.outcome, str(outcome.error)) == (fate, fate)
    assert [j.job_name for j in jobs.pending] == (["settles"] if fate == "snoozed" else [])
