"""A web dashboard for Soniq: queues at a glance, every job and its attempts, dead letters,
schedules, queue controls and workers, each job linked to its trace.

Server-rendered with Starlette and Jinja2 (a small, well-kept ASGI stack that mounts in any
FastAPI or Starlette app); its only script is ``static/live.js``, which refreshes each page's
data in place. Everything ships in the wheel, so it works offline. It uses the public API of
:class:`soniq.Soniq` only::

    from soniq_dashboard import create_app
    asgi = create_app(app, actions=True, trace_url="http://localhost:16686/trace/{trace_id}")

or ``soniq dashboard myapp.jobs:app`` (127.0.0.1:6161 unless told otherwise).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from . import filters, views
from .actions import ACTIONS, action_endpoint
from .pages import PAGES
from .security import Credentials
from .state import HERE, Dashboard

if TYPE_CHECKING:
    from soniq import Soniq

__all__ = ["create_app"]

logger = logging.getLogger("soniq.dashboard")


def create_app(
    app: Soniq,
    *,
    actions: bool = False,
    trace_url: str | None = None,
    redact: views.Redactor | None = None,
    credentials: Credentials | None = None,
    refresh_seconds: float = 5.0,
) -> Starlette:
    """The dashboard of ``app`` as an ASGI application.

    - ``actions``: allow retrying, deleting, pausing, triggering. They need credentials from
      the environment (``SONIQ_DASHBOARD_TOKEN``, or ``SONIQ_DASHBOARD_USER`` and
      ``SONIQ_DASHBOARD_PASSWORD``); without them this raises, rather than serve actions to
      anyone.
    - ``trace_url``: a link template with ``{trace_id}`` (e.g. Jaeger's
      ``http://localhost:16686/trace/{trace_id}``); default ``SONIQ_DASHBOARD_TRACE_URL``.
    - ``redact(job_name, args) -> args``: what is shown of each job's arguments.
    """
    from soniq import ConfigurationError

    creds = credentials if credentials is not None else Credentials.from_env()
    if actions and not creds.configured:
        raise ConfigurationError(
            "The dashboard's actions need credentials: set SONIQ_DASHBOARD_TOKEN, or "
            "SONIQ_DASHBOARD_USER and SONIQ_DASHBOARD_PASSWORD, or leave actions off"
        )
    if trace_url is None:
        trace_url = os.environ.get("SONIQ_DASHBOARD_TRACE_URL") or None
    if trace_url is not None and "{trace_id}" not in trace_url:
        raise ConfigurationError(
            f"trace_url {trace_url!r} has no {{trace_id}} placeholder; e.g. "
            "http://localhost:16686/trace/{trace_id}"
        )
    dashboard = Dashboard(app, actions, creds, trace_url, redact, refresh_seconds)
    routes: list[Route | Mount] = [Route(path, fn, name=name) for path, fn, name in PAGES]
    routes += [
        Route(path, action_endpoint(fn, back), methods=["POST"]) for path, fn, back in ACTIONS
    ]
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    web = Starlette(
        routes=routes,
        middleware=[Middleware(Auth, credentials=creds)],
        exception_handlers={
            filters.BadFilter: _bad_request,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    web.state.dashboard = dashboard
    return web


class Auth:
    """Ask for credentials when they are configured; record who is asking in the scope."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.credentials.configured:
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
        user = self.credentials.check(header)
        if user is None:
            response = Response(
                "Sign in with the dashboard's credentials.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="soniq", charset="UTF-8"'},
            )
            await response(scope, receive, send)
            return
        scope["soniq_user"] = user
        await self.app(scope, receive, send)


def _dashboard(request: Request) -> Dashboard:
    d: Dashboard = request.app.state.dashboard
    return d


async def _bad_request(request: Request, exc: Exception) -> Response:
    return _dashboard(request).error(request, 400, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "No such page." if exc.status_code == 404 else str(exc.detail)
    return _dashboard(request).error(request, exc.status_code, message)


async def _server_error(request: Request, exc: Exception) -> Response:
    from soniq import ConfigurationError, JobArgumentsError

    if isinstance(exc, (ConfigurationError, JobArgumentsError, ValueError)):
        return _dashboard(request).error(request, 400, str(exc))
    # The details go to the server's log, never to the page.
    logger.error("dashboard: %s failed", request.url.path, exc_info=exc)
    return _dashboard(request).error(
        request, 500, "Something went wrong; the details are in the server log."
    )
