"""The dashboard's settings and its rendering, shared by every page and action."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from . import views
from .filters import JobFilters, cursor_of
from .security import CSRF_COOKIE, CSRF_FIELD, FLASH_COOKIE, Credentials, new_csrf_token

if TYPE_CHECKING:
    from soniq import Soniq

logger = logging.getLogger("soniq.dashboard")

HERE = Path(__file__).parent


@dataclass
class Dashboard:
    app: Soniq
    actions: bool
    credentials: Credentials
    trace_url: str | None
    redact: views.Redactor | None
    refresh_seconds: float
    env: Environment = field(init=False)

    def __post_init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True),
        )
        self.env.globals.update(
            duration=views.duration,
            when=views.when,
            seconds_between=views.seconds_between,
            CSRF_FIELD=CSRF_FIELD,
        )

    def render(self, request: Request, page: str, status: int = 200, **context: Any) -> Response:
        partial = request.query_params.get("partial") == "1"
        token = request.cookies.get(CSRF_COOKIE) or new_csrf_token()
        context.update(
            page=page,
            actions=self.actions,
            csrf=token,
            refresh_ms=int(self.refresh_seconds * 1000),
            root=request.scope.get("root_path", ""),
            user=request.scope.get("soniq_user"),
            flash=unquote(request.cookies.get(FLASH_COOKIE, "")) if not partial else "",
        )
        name = f"{page}_live.html" if partial else f"{page}.html"
        html = self.env.get_template(name).render(context)
        response = HTMLResponse(html, status_code=status)
        response.headers["Cache-Control"] = "no-store"
        if not partial and request.cookies.get(FLASH_COOKIE):
            response.delete_cookie(FLASH_COOKIE)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        html = self.env.get_template("error.html").render(
            status=status,
            message=message,
            page="error",
            actions=self.actions,
            root=request.scope.get("root_path", ""),
            refresh_ms=0,
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    async def page(self, f: JobFilters) -> tuple[list[dict[str, Any]], str | None]:
        """One page of jobs, newest first, and the cursor of the next page (keyset paging:
        each page costs the same however deep it is)."""
        after = None if f.after is None else {"created_at": f.after[0], "id": f.after[1]}
        found = await self.app.list_jobs(**f.api_filters(), limit=f.limit + 1, after=after)
        rows: list[dict[str, Any]] = [dict(job) for job in found[: f.limit]]
        more = len(found) > f.limit
        return rows, (cursor_of(rows[-1]) if more and rows else None)
