"""The read-only pages. Each page is a fragment template (the part that refreshes itself)
inside a wrapper; ``?partial=1`` returns the fragment alone, which ``live.js`` swaps in."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from . import data, filters, views

if TYPE_CHECKING:
    from .state import Dashboard


# The overview's statistics read at most this many of the last hour's newest done jobs: enough
# for stable percentiles, and a bounded cost on a busy table (bench.dashboard).
STATS_SAMPLE = 5000


async def overview(request: Request) -> Response:
    d = _dashboard(request)
    # Independent reads, each on its own pooled connection: the page waits for the slowest,
    # not for their sum.
    stats, queue_rows, workers = await asyncio.gather(
        d.app.job_stats(window=3600, sample=STATS_SAMPLE),
        data.queue_rows(d.app),
        d.app.list_workers(),
    )
    queues = data.with_rates(queue_rows, data.per_queue_minute(stats))
    return d.render(
        request,
        "overview",
        queues=queues,
        stats=stats,
        workers=[w for w in workers if w["alive"]],
    )


async def jobs(request: Request) -> Response:
    d = _dashboard(request)
    f = filters.job_filters(request.query_params)
    rows, next_cursor = await d.page(f)
    return d.render(request, "jobs", jobs=rows, f=f, next_cursor=next_cursor, states=filters.STATES)


async def job_detail(request: Request) -> Response:
    d = _dashboard(request)
    job_id = filters.job_id(request.path_params["job_id"])
    job = await d.app.get_job(job_id)
    if job is None:
        return d.error(
            request, 404, f"No job with id {job_id}: it may have been purged by retention."
        )
    return d.render(
        request,
        "job",
        job=job,
        args=views.shown_args(d.redact, job),
        result=views.shown_result(job),
        trace=views.trace_link(d.trace_url, job.get("trace_context")),
        run_s=views.seconds_between(job.get("started_at"), job.get("finished_at")),
        wait_s=views.seconds_between(job.get("scheduled_at"), job.get("started_at")),
    )


async def dead_letters(request: Request) -> Response:
    d = _dashboard(request)
    f = filters.job_filters(request.query_params, fixed_status="dead_letter")
    rows, next_cursor = await d.page(f)
    # The count a bulk retry would touch, shown before it runs: counted over dead letters
    # only (their own partial index), never the whole table.
    matching = await d.app.bulk_jobs("retry", dry_run=True, **f.api_filters())
    return d.render(
        request, "dead_letters", jobs=rows, f=f, next_cursor=next_cursor, matching=matching
    )


async def schedules(request: Request) -> Response:
    d = _dashboard(request)
    return d.render(request, "schedules", schedules=await d.app.scheduler.list())


async def queues(request: Request) -> Response:
    d = _dashboard(request)
    return d.render(request, "queues", queues=await data.queue_rows(d.app))


async def workers(request: Request) -> Response:
    d = _dashboard(request)
    return d.render(request, "workers", workers=await d.app.list_workers())


def _dashboard(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


PAGES: list[tuple[str, Any, str]] = [
    ("/", overview, "overview"),
    ("/jobs", jobs, "jobs"),
    ("/jobs/{job_id}", job_detail, "job"),
    ("/dead-letters", dead_letters, "dead_letters"),
    ("/schedules", schedules, "schedules"),
    ("/queues", queues, "queues"),
    ("/workers", workers, "workers"),
]
