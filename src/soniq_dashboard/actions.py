"""Actions that change jobs, schedules and queues. Each one needs credentials, a form token
that matches the browser's cookie, and is logged with who did what."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from . import filters
from .security import CSRF_COOKIE, CSRF_FIELD, FLASH_COOKIE, csrf_ok, same_origin

if TYPE_CHECKING:
    from .state import Dashboard

logger = logging.getLogger("soniq.dashboard")

Action = Callable[["Dashboard", Request, dict[str, str]], Awaitable[str]]


async def retry_job(d: Dashboard, request: Request, form: dict[str, str]) -> str:
    job_id = filters.job_id(request.path_params["job_id"])
    ok = await d.app.retry_job(job_id)
    return f"Job {job_id} queued to run again." if ok else f"Job {job_id} could not be retried."


async def delete_job(d: Dashboard, request: Request, form: dict[str, str]) -> str:
    job_id = filters.job_id(request.path_params["job_id"])
    ok = await d.app.delete_job(job_id)
    return f"Job {job_id} deleted." if ok else f"Job {job_id} was not found."


async def retry_dead_letters(d: Dashboard, request: Request, form: dict[str, str]) -> str:
    # The filters come from the page the count was shown on; the count shown must still hold,
    # so a bulk retry never touches more than the user saw.
    f = filters.job_filters(request.query_params, fixed_status="dead_letter")
    expected = form.get("expected", "")
    now = await d.app.bulk_jobs("retry", dry_run=True, **f.api_filters())
    if not expected.isdigit() or int(expected) != now:
        raise filters.BadFilter(
            f"{now} dead letters match now, not the {expected or '?'} shown; review and try again"
        )
    done = await d.app.bulk_jobs("retry", **f.api_filters())
    return f"{done} dead-lettered job(s) queued to run again."


async def schedule_action(d: Dashboard, request: Request, form: dict[str, str]) -> str:
    name = request.path_params["name"]
    verb = request.path_params["verb"]
    if verb not in ("pause", "resume", "trigger"):
        raise filters.BadFilter(f"{verb!r} is not a schedule action; use pause, resume or trigger")
    result = await getattr(d.app.scheduler, verb)(name)
    if verb == "trigger":
        return f"Schedule {name} triggered: job {result}."
    return f"Schedule {name} {verb}d."


async def queue_action(d: Dashboard, request: Request, form: dict[str, str]) -> str:
    name = request.path_params["name"]
    verb = request.path_params["verb"]
    if verb == "pause":
        await d.app.pause_queue(name)
        return f"Queue {name} paused: no worker claims from it until it is resumed."
    if verb == "resume":
        await d.app.resume_queue(name)
        return f"Queue {name} resumed."
    if verb == "limit":
        raw = form.get("limit", "").strip()
        if raw and (not raw.isdigit() or int(raw) < 1):
            raise filters.BadFilter(f"limit {raw!r}: give a whole number of 1 or more, or nothing")
        await d.app.set_queue_limit(name, int(raw) if raw else None)
        return f"Queue {name}: " + (f"at most {raw} running at once." if raw else "no limit.")
    raise filters.BadFilter(f"{verb!r} is not a queue action; use pause, resume or limit")


def action_endpoint(action: Action, back: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        d: Dashboard = request.app.state.dashboard
        if not d.actions:
            return d.error(request, 403, "Actions are turned off: this dashboard is read-only.")
        user = request.scope.get("soniq_user")
        if user is None:
            return d.error(
                request, 401, "Sign in to act: actions need the dashboard's credentials."
            )
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not csrf_ok(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)) or not same_origin(
            request.headers.get("origin"), request.headers.get("host")
        ):
            return d.error(
                request,
                403,
                "This form did not come from this dashboard; reload the page and try again.",
            )
        message = await action(d, request, form)
        logger.info(
            "dashboard: %s by %s: %s",
            request.url.path,
            user,
            message,
            extra={"event": "dashboard.action", "user": user, "path": request.url.path},
        )
        target = back.format(**request.path_params)
        if request.query_params:
            target += "?" + urlencode(list(request.query_params.multi_items()))
        response = RedirectResponse(f"{request.scope.get('root_path', '')}{target}", 303)
        # The outcome rides in a cookie read once by the next page, not in the URL, so no link
        # can make the dashboard display text of someone else's choosing.
        response.set_cookie(FLASH_COOKIE, quote(message), httponly=True, samesite="strict")
        return response

    return endpoint


ACTIONS: list[tuple[str, Action, str]] = [
    ("/jobs/{job_id}/retry", retry_job, "/jobs/{job_id}"),
    ("/jobs/{job_id}/delete", delete_job, "/jobs"),
    ("/dead-letters/retry", retry_dead_letters, "/dead-letters"),
    ("/schedules/{name}/{verb}", schedule_action, "/schedules"),
    ("/queues/{name}/{verb}", queue_action, "/queues"),
]
