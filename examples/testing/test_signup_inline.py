"""Inline mode: each enqueue runs its job at once, through the app's middlewares and hooks."""

from __future__ import annotations

from signup import Mailer, sign_up

from soniq import Soniq
from soniq.testing import Clock, inline


async def test_signing_up_sends_the_welcome_mail(app: Soniq, mailer: Mailer) -> None:
    with inline(app) as run:
        await sign_up(app, user_id=1, email="ada@example.com")

    assert mailer.sent == [("ada@example.com", "Welcome!")]
    assert run.outcomes.results("signup.welcome") == ["welcomed user 1"]


async def test_a_flaky_mail_server_is_retried_at_once(app: Soniq, mailer: Mailer) -> None:
    mailer.fail_next = 2
    with inline(app) as run:
        await sign_up(app, user_id=2, email="bo@example.com")

    assert [o.outcome for o in run.outcomes] == ["retry", "retry", "done"]
    assert mailer.sent == [("bo@example.com", "Welcome!")]


async def test_the_nudge_comes_a_day_later(app: Soniq, mailer: Mailer, soniq_clock: Clock) -> None:
    with inline(app) as run:
        await sign_up(app, user_id=3, email="cy@example.com")
        assert [j.job_name for j in run.scheduled] == ["signup.nudge"]

        await soniq_clock.advance(24 * 3600)
        await run.drain()

    assert mailer.sent[-1] == ("cy@example.com", "How is it going?")
