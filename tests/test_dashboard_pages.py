"""Every dashboard page over HTTP against a real database: what each shows, redaction, the
trace link, keyset paging, and actions that change jobs."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from soniq import Soniq
from soniq.testing import drain
from soniq_dashboard import create_app
from soniq_dashboard.security import Credentials
from soniq_otel import OtelConfig

AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:pw-123456").decode()}
TRACE_URL = "http://jaeger.test/trace/{trace_id}"


def jobs_app(app: Soniq) -> None:
    @app.job(name="mail.send", queue="emails", max_retries=0)
    async def send(to: str, password: str = "") -> str:
        if to == "broken@example.com":
            raise ValueError(f"no mailbox for {to}")
        return f"sent to {to}"

    @app.job(name="report.build", queue="reports")
    async def build(n: int) -> None: ...


@pytest.fixture
async def client(app: Soniq) -> AsyncIterator[httpx.AsyncClient]:
    jobs_app(app)
    app.instrument(otel=OtelConfig(tracer_provider=TracerProvider(), metrics=False, logs=False))
    web = create_app(
        app,
        actions=True,
        trace_url=TRACE_URL,
        credentials=Credentials(user="ops", password="pw-123456"),
        redact=lambda name, args: {**args, "password": "***"} if "password" in args else args,
    )
    transport = httpx.ASGITransport(app=web, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://dash.test", headers=AUTH
    ) as c:
        yield c


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, "the page has no action form"
    return found.group(1)


async def test_overview_shows_queues_counts_stats_and_workers(
    app: Soniq, client: httpx.AsyncClient
) -> None:
    await app.enqueue("mail.send", to="a@example.com")
    await app.enqueue("mail.send", to="broken@example.com")
    await drain(app)
    for i in range(3):
        await app.enqueue("report.build", n=i)
    page = await client.get("/")
    assert page.status_code == 200
    row = re.search(r'<tr data-queue="reports">(.*?)</tr>', page.text, re.S)
    assert row and re.search(r'data-state="ready">3<', row.group(1))
    emails = re.search(r'<tr data-queue="emails">(.*?)</tr>', page.text, re.S)
    assert emails and 'data-state="dead_letter">' in emails.group(1)
    assert "mail.send" in page.text  # the last hour's statistics by job name
    # The live region alone, for live.js.
    partial = await client.get("/?partial=1")
    assert partial.text.lstrip().startswith("<h1>Overview</h1>")


async def test_jobs_filter_and_page_by_keyset(app: Soniq, client: httpx.AsyncClient) -> None:
    ids = [await app.enqueue("report.build", n=i) for i in range(7)]
    await app.enqueue("mail.send", to="x@example.com")
    first = await client.get("/jobs", params={"queue": "reports", "limit": "4"})
    shown = re.findall(r'data-job-id="([^"]+)"', first.text)
    assert shown == list(reversed(ids))[:4]
    more = re.search(r'rel="next" href="\?([^"]+)"', first.text)
    assert more
    second = await client.get("/jobs?" + more.group(1).replace("&amp;", "&"))
    assert re.findall(r'data-job-id="([^"]+)"', second.text) == list(reversed(ids))[4:]
    by_args = await client.get("/jobs", params={"args": '{"n": 5}'})
    assert re.findall(r'data-job-id="([^"]+)"', by_args.text) == [ids[5]]


async def test_job_page_shows_attempts_redacted_args_and_trace_link(
    app: Soniq, client: httpx.AsyncClient
) -> None:
    job_id = await app.enqueue("mail.send", to="broken@example.com", password="hunter2")
    await drain(app)
    page = await client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "hunter2" not in page.text and "***" in page.text
    assert "ValueError: no mailbox for broken@example.com</summary>" in page.text
    assert "Traceback (most recent call last)" in page.text  # the attempt's, as stored
    job = await app.get_job(job_id)
    assert job is not None and job["trace_context"]
    trace_id = job["trace_context"]["traceparent"].split("-")[1]
    assert f'href="http://jaeger.test/trace/{trace_id}"' in page.text


async def test_dead_letter_retry_shows_the_count_first_and_runs(
    app: Soniq, client: httpx.AsyncClient
) -> None:
    for _ in range(2):
        await app.enqueue("mail.send", to="broken@example.com")
    await drain(app)
    page = await client.get("/dead-letters")
    assert "2 dead letters match" in page.text
    token = await form_token(client, "/dead-letters")
    # A count that no longer holds is refused, so a retry never touches more than was shown.
    stale = await client.post("/dead-letters/retry", data={"csrf": token, "expected": "5"})
    assert stale.status_code == 400 and "2 dead letters match now" in stale.text
    done = await client.post("/dead-letters/retry", data={"csrf": token, "expected": "2"})
    assert done.status_code == 303
    assert [j["status"] for j in await app.list_jobs(status="queued")] == ["queued"] * 2


async def test_retry_and_delete_one_job(app: Soniq, client: httpx.AsyncClient) -> None:
    job_id = await app.enqueue("mail.send", to="broken@example.com")
    await drain(app)
    token = await form_token(client, f"/jobs/{job_id}")
    r = await client.post(f"/jobs/{job_id}/retry", data={"csrf": token})
    assert r.status_code == 303
    job = await app.get_job(job_id)
    assert job is not None and job["status"] == "queued"
    flash = await client.get(r.headers["location"])
    assert "queued to run again" in flash.text
    r = await client.post(f"/jobs/{job_id}/delete", data={"csrf": token})
    assert r.status_code == 303 and await app.get_job(job_id) is None


async def test_queues_pause_and_limit_through_the_page(
    app: Soniq, client: httpx.AsyncClient
) -> None:
    await app.enqueue("report.build", n=1)
    token = await form_token(client, "/queues")
    assert (await client.post("/queues/reports/pause", data={"csrf": token})).status_code == 303
    r = await client.post("/queues/reports/limit", data={"csrf": token, "limit": "3"})
    assert r.status_code == 303
    page = await client.get("/queues")
    row = re.search(r'<tr data-queue="reports">(.*?)</tr>', page.text, re.S)
    assert row and "paused" in row.group(1) and ">3<" in row.group(1)
    bad = await client.post("/queues/reports/limit", data={"csrf": token, "limit": "0"})
    assert bad.status_code == 400 and "1 or more" in bad.text


async def test_schedules_and_workers_pages(app: Soniq, client: httpx.AsyncClient) -> None:
    await app.scheduler.add("report.build", every=60, args={"n": 1}, name="hourly-report")
    page = await client.get("/schedules")
    assert "hourly-report" in page.text and "Pause" in page.text
    token = await form_token(client, "/schedules")
    r = await client.post("/schedules/hourly-report/pause", data={"csrf": token})
    assert r.status_code == 303
    schedule = await app.scheduler.get("hourly-report")
    assert schedule is not None and schedule["paused"] is True
    workers = await client.get("/workers")
    assert workers.status_code == 200 and "No workers" in workers.text


async def test_the_mounted_example_serves_the_dashboard_under_its_prefix(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.setenv("SONIQ_DATABASE_URL", clean_db)
    monkeypatch.delenv("SONIQ_DASHBOARD_PASSWORD", raising=False)
    monkeypatch.delenv("SONIQ_DASHBOARD_TOKEN", raising=False)
    example = importlib.import_module("examples.dashboard_mount")
    example = importlib.reload(example)
    transport = httpx.ASGITransport(app=example.web)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://site.test") as c:
            job_id = (await c.get("/signup", params={"email": "a@example.com"})).json()["job_id"]
            page = await c.get(f"/soniq/jobs/{job_id}")
            assert page.status_code == 200
            assert "a@example.com" in page.text and "blue" not in page.text  # redacted
            assert 'href="/soniq/static/dashboard.css"' in page.text  # links keep the prefix
            overview = await c.get("/soniq/")
            assert 'href="/soniq/jobs?queue=emails"' in overview.text
    finally:
        await example.soniq.close()
