"""The dashboard in a real browser: Playwright driving Debian's Chromium against a served
dashboard and a real database. Screenshots of each step are kept in
``test-results/dashboard/`` (or ``SONIQ_SCREENSHOT_DIR``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from soniq import Soniq
from soniq.testing import drain
from soniq_dashboard import create_app
from soniq_dashboard.security import Credentials
from soniq_otel import OtelConfig
from tests.support.programs import require_program

USER, PASSWORD = "ops", "browser-pw-1"
SHOTS = Path(os.environ.get("SONIQ_SCREENSHOT_DIR", "test-results/dashboard"))
FAILING = {"flaky@example.com"}  # addresses whose mail fails until the test fixes them


def register(app: Soniq) -> None:
    @app.job(name="mail.send", queue="emails", max_retries=0)
    async def send(to: str) -> str:
        if to in FAILING:
            raise ConnectionError(f"SMTP refused {to}")
        return f"sent to {to}"

    @app.job(name="report.build", queue="reports")
    async def build(n: int) -> None: ...


class Served:
    """The dashboard of its own Soniq app, served by uvicorn on a free loopback port."""

    def __init__(self, url: str) -> None:
        self.app = Soniq(url)
        register(self.app)
        web = create_app(
            self.app,
            actions=True,
            trace_url="http://jaeger.test/trace/{trace_id}",
            credentials=Credentials(user=USER, password=PASSWORD),
            refresh_seconds=0.5,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(web, host="127.0.0.1", port=0, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = 10.0
        while not self.server.started and deadline > 0:
            threading.Event().wait(0.05)
            deadline -= 0.05
        assert self.server.started, "uvicorn did not start"
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(clean_db: str) -> Iterator[str]:
    with Served(clean_db) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = require_program("chromium", "chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


async def shot(page: Any, name: str) -> None:
    # Playwright creates the folder itself.
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_the_dashboard_in_a_browser(app: Soniq, served: str, browser: Any) -> None:
    register(app)
    app.instrument(otel=OtelConfig(tracer_provider=TracerProvider(), metrics=False, logs=False))
    FAILING.add("flaky@example.com")
    failed_id = await app.enqueue("mail.send", to="flaky@example.com")
    await app.enqueue("mail.send", to="ok@example.com")
    await drain(app)
    for i in range(4):
        await app.enqueue("report.build", n=i)
    await app.scheduler.add("report.build", every=3600, args={"n": 0}, name="hourly-report")

    context = await browser.new_context(http_credentials={"username": USER, "password": PASSWORD})
    page = await context.new_page()

    # The overview: the queues and their counts.
    await page.goto(served + "/")
    reports = page.locator('tr[data-queue="reports"]')
    await reports.wait_for()
    assert await reports.locator('[data-state="ready"]').inner_text() == "4"
    assert (
        await page.locator('tr[data-queue="emails"] [data-state="dead_letter"]').inner_text() == "1"
    )
    await shot(page, "overview")

    # Filter the jobs by queue.
    await page.goto(served + "/jobs")
    await page.get_by_label("Queue", exact=True).fill("reports")
    await page.get_by_role("button", name="Filter").click()
    await page.wait_for_url("**/jobs?*queue=reports*")
    assert await page.locator("tr[data-job-id]").count() == 4
    await shot(page, "jobs")

    # The dead letter: its traceback, then its trace link.
    await page.goto(served + "/dead-letters")
    await shot(page, "dead-letters")
    await page.locator(f'a[href="/jobs/{failed_id}"]').click()
    await page.wait_for_url(f"**/jobs/{failed_id}")
    assert (
        "ConnectionError: SMTP refused flaky@example.com"
        in await page.locator(".traceback").inner_text()
    )
    job = await app.get_job(failed_id)
    assert job is not None and job["trace_context"]
    trace_id = job["trace_context"]["traceparent"].split("-")[1]
    href = await page.get_by_role("link", name="Open trace").get_attribute("href")
    assert href == f"http://jaeger.test/trace/{trace_id}"
    await shot(page, "job")

    # Retry it with the keyboard, let a worker run it, and watch the page turn to done.
    FAILING.discard("flaky@example.com")
    retry = page.get_by_role("button", name=f"Retry job {failed_id}")
    await retry.focus()
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"**/jobs/{failed_id}")
    assert "queued to run again" in await page.locator(".flash").inner_text()
    await drain(app)
    await page.locator('[data-field="status"]', has_text="done").wait_for(timeout=10_000)

    # Schedules, queues and workers render.
    for name in ("schedules", "queues", "workers"):
        await page.goto(f"{served}/{name}")
        await page.locator("h1").wait_for()
        await shot(page, name)

    # Without credentials nothing is shown and no action runs.
    anonymous = await browser.new_context()
    response = await anonymous.request.post(f"{served}/jobs/{failed_id}/delete", form={"csrf": "x"})
    assert response.status == 401
    # With credentials but no form token (a forged cross-site post), refused too.
    forged = await context.request.post(f"{served}/jobs/{failed_id}/delete", form={})
    assert forged.status == 403
    assert await app.get_job(failed_id) is not None
    await asyncio.gather(anonymous.close(), context.close())
