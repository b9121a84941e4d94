"""Against PostgreSQL: enqueue for real, drain every ready job, move the database's clock."""

from __future__ import annotations

from signup import Mailer, sign_up

from soniq import Soniq
from soniq.testing import Clock, drain


async def test_the_jobs_run_from_the_database(db_app: Soniq, mailer: Mailer) -> None:
    await sign_up(db_app, user_id=1, email="ada@example.com")

    outcomes = await drain(db_app)

    outcomes.assert_all_done()
    assert [o.job_name for o in outcomes] == ["signup.welcome"]  # the nudge is not due
    assert mailer.sent == [("ada@example.com", "Welcome!")]


async def test_a_day_later_the_nudge_goes_out(
    db_app: Soniq, mailer: Mailer, soniq_clock: Clock
) -> None:
    # soniq_clock moves soniq_database's time too (attach another app's with .attach(app)).
    await sign_up(db_app, user_id=2, email="bo@example.com")
    await drain(db_app)

    await soniq_clock.advance(24 * 3600)
    outcomes = await drain(db_app)

    assert [(o.job_name, o.outcome) for o in outcomes] == [("signup.nudge", "done")]
    assert mailer.sent[-1] == ("bo@example.com", "How is it going?")
