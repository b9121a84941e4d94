"""Capture mode: assert what was enqueued, then run it (and what it enqueues) on demand."""

from __future__ import annotations

from datetime import timedelta

from signup import Mailer, sign_up

from soniq import Soniq
from soniq.testing import Clock, capture


async def test_signing_up_enqueues_both_mails(app: Soniq, mailer: Mailer) -> None:
    with capture(app) as jobs:
        await sign_up(app, user_id=1, email="ada@example.com")

    jobs.assert_enqueued("signup.welcome", email="ada@example.com", queue="emails")
    jobs.assert_enqueued("signup.nudge", user_id=1, scheduled_in=timedelta(days=1))
    assert mailer.sent == []  # captured, not run


async def test_draining_runs_what_is_due_and_retries_wait_for_the_clock(
    app: Soniq, mailer: Mailer, soniq_clock: Clock
) -> None:
    mailer.fail_next = 1
    with capture(app) as jobs:
        await sign_up(app, user_id=2, email="bo@example.com")

        first = await jobs.drain()
        assert [(o.job_name, o.outcome) for o in first] == [("signup.welcome", "retry")]

        await soniq_clock.advance(60)  # the welcome job's backoff
        second = await jobs.drain()
        assert [(o.job_name, o.outcome) for o in second] == [("signup.welcome", "done")]

    assert mailer.sent == [("bo@example.com", "Welcome!")]
