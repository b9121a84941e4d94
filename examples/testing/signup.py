"""A small app to test: signing up enqueues a welcome mail now and a nudge a day later.

The mail server is flaky, so the welcome job retries with a minute's backoff. The app is built
by a function, so each test gets its own (with its own mailer, and a database or none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from soniq import Soniq


class MailServerDown(Exception):
    pass


@dataclass
class Mailer:
    """Stands in for an SMTP client: keeps what it sent; fails the next ``fail_next`` sends."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    fail_next: int = 0

    def send(self, to: str, subject: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise MailServerDown(f"could not send {subject!r} to {to}")
        self.sent.append((to, subject))


def create_app(mailer: Mailer, database_url: str | None = None) -> Soniq:
    app = Soniq(database_url)

    @app.job(name="signup.welcome", queue="emails", max_retries=3, retry_backoff=60)
    async def welcome(user_id: int, email: str) -> str:
        mailer.send(email, "Welcome!")
        return f"welcomed user {user_id}"

    @app.job(name="signup.nudge", queue="emails")
    async def nudge(user_id: int, email: str) -> None:
        mailer.send(email, "How is it going?")

    return app


async def sign_up(app: Soniq, user_id: int, email: str) -> None:
    """What the web handler calls once the user row is saved."""
    await app.enqueue("signup.welcome", user_id=user_id, email=email)
    await app.enqueue("signup.nudge", user_id=user_id, email=email, scheduled_at=timedelta(days=1))
