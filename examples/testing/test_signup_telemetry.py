"""Telemetry: the spans, metrics and log records the jobs produce, for tests of dashboards
and alerts."""

from __future__ import annotations

from signup import Mailer, sign_up

from soniq import Soniq
from soniq.testing import capture_telemetry, inline


async def test_a_failed_send_is_traced_counted_and_logged(app: Soniq, mailer: Mailer) -> None:
    mailer.fail_next = 1
    with capture_telemetry(app) as telemetry, inline(app):
        await sign_up(app, user_id=1, email="ada@example.com")

    assert telemetry.span_names.count("process signup.welcome") == 2
    retries = telemetry.metric(
        "soniq_job_attempts_total", queue="emails", job_name="signup.welcome", outcome="retry"
    )
    assert retries == 1
    assert "job.retry" in telemetry.events
