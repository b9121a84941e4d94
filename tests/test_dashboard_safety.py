"""The dashboard's guards, over HTTP against a real database: credentials, forged forms, bad
URLs answered with a 4xx page that says what was wrong (never a stack trace)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from soniq import ConfigurationError, Soniq
from soniq_dashboard import create_app
from soniq_dashboard.security import CSRF_COOKIE, Credentials

CREDS = Credentials(user="ops", password="s3cret-pw", token="t0ken-value")


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.fixture
async def client(app: Soniq) -> AsyncIterator[httpx.AsyncClient]:
    web = create_app(app, actions=True, credentials=CREDS)
    transport = httpx.ASGITransport(app=web, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as c:
        yield c


def test_actions_without_credentials_refuse_to_start(app: Soniq) -> None:
    with pytest.raises(ConfigurationError, match="SONIQ_DASHBOARD_TOKEN"):
        create_app(app, actions=True, credentials=Credentials())


def test_trace_url_without_placeholder_is_refused(app: Soniq) -> None:
    with pytest.raises(ConfigurationError, match=r"\{trace_id\}"):
        create_app(app, trace_url="http://jaeger/trace/")


async def test_pages_ask_for_credentials_once_they_are_set(client: httpx.AsyncClient) -> None:
    r = await client.get("/jobs/not-an-id")
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic")
    wrong = await client.get("/jobs/not-an-id", headers=basic("ops", "nope"))
    assert wrong.status_code == 401
    bearer = await client.get("/jobs/not-an-id", headers={"Authorization": "Bearer t0ken-value"})
    assert bearer.status_code == 400  # past the door, stopped by the malformed id


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/jobs/not-an-id", "is not a job id"),
        ("/jobs?status=exploded", "is not a job state"),
        ("/jobs?limit=0", "whole number from 1 to 200"),
        ("/jobs?limit=abc", "whole number from 1 to 200"),
        ("/jobs?args=%7Bnot-json", "is not JSON"),
        ("/jobs?args=%5B1%5D", "must be a JSON object"),
        ("/jobs?created_after=yesterday", "ISO 8601"),
        ("/jobs?after=123", "is not a page cursor"),
        ("/jobs?after=2026-12-05T10:00:00%2B00:00~nope", "is not a job id"),
        ("/dead-letters?created_before=13/13/13", "ISO 8601"),
        ("/no/such/page", "No such page"),
    ],
)
async def test_bad_urls_get_a_page_saying_what_was_wrong(
    client: httpx.AsyncClient, path: str, says: str
) -> None:
    r = await client.get(path, headers=basic("ops", "s3cret-pw"))
    assert 400 <= r.status_code < 500
    assert says in r.text
    assert "Traceback" not in r.text and 'File "' not in r.text


async def test_an_action_without_credentials_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/jobs/0190b0c4-1f1e-7a3b-9c2d-5e6f7a8b9c0d/retry", data={"csrf": "x"})
    assert r.status_code == 401


async def test_a_forged_form_is_refused(client: httpx.AsyncClient) -> None:
    auth = basic("ops", "s3cret-pw")
    path = "/jobs/0190b0c4-1f1e-7a3b-9c2d-5e6f7a8b9c0d/retry"
    # No token at all, then a token that does not match the cookie.
    r = await client.post(path, headers=auth, data={})
    assert r.status_code == 403 and "did not come from this dashboard" in r.text
    client.cookies.set(CSRF_COOKIE, "cookie-token")
    r = await client.post(path, headers=auth, data={"csrf": "other-token"})
    assert r.status_code == 403
    # The right token, sent from another site's page.
    r = await client.post(
        path, headers={**auth, "Origin": "https://evil.example"}, data={"csrf": "cookie-token"}
    )
    assert r.status_code == 403


async def test_read_only_dashboard_refuses_actions(app: Soniq) -> None:
    web = create_app(app, credentials=CREDS)  # actions off
    transport = httpx.ASGITransport(app=web, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.test") as c:
        c.cookies.set(CSRF_COOKIE, "tok")
        r = await c.post(
            "/jobs/0190b0c4-1f1e-7a3b-9c2d-5e6f7a8b9c0d/delete",
            headers=basic("ops", "s3cret-pw"),
            data={"csrf": "tok"},
        )
    assert r.status_code == 403 and "read-only" in r.text
