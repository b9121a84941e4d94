"""app.enqueue_sync / enqueue_many_sync: from plain threads, with the async calls' checks,
middlewares and results, against real PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from soniq import (
    ConfigurationError,
    EnqueueContext,
    EnqueueNext,
    JobArgumentsError,
    Middleware,
    Soniq,
    UnknownJobError,
)
from soniq_otel import OtelConfig
from tests.support.waiting import running_worker, wait_status


def in_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``func`` in a fresh thread (no event loop there) and return or raise its result."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = func(*args, **kwargs)
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    t.join(60)
    assert not t.is_alive(), "the call did not return"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def sync_app(app: Soniq) -> Soniq:
    @app.job(name="sync.add", queue="sums", priority=3, max_retries=1)
    def add(x: int, y: int = 1) -> int:
        return x + y

    return app


async def test_enqueue_sync_writes_the_row_the_async_call_would(
    sync_app: Soniq, db: asyncpg.Connection
) -> None:
    job_id = await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x=2, y=5)
    twin = await sync_app.enqueue("sync.add", x=2, y=5)
    rows = await db.fetch(
        "SELECT id::text, job_name, queue, args::text, priority, max_attempts, status::text "
        "FROM soniq_jobs ORDER BY seq"
    )
    assert [r["id"] for r in rows] == [job_id, twin]
    assert [tuple(r)[1:] for r in rows] == [
        ("sync.add", "sums", '{"x": 2, "y": 5}', 3, 2, "queued")
    ] * 2


async def test_enqueue_many_sync_returns_ids_in_order(
    sync_app: Soniq, db: asyncpg.Connection
) -> None:
    ids = await asyncio.to_thread(
        sync_app.enqueue_many_sync, "sync.add", [{"x": i} for i in range(5)], priority=-1
    )
    rows = await db.fetch("SELECT id::text, args->>'x' AS x, priority FROM soniq_jobs ORDER BY seq")
    assert [r["id"] for r in rows] == ids
    assert [int(r["x"]) for r in rows] == list(range(5))
    assert {r["priority"] for r in rows} == {-1}
    assert await asyncio.to_thread(sync_app.enqueue_many_sync, "sync.add", []) == []


async def test_scheduled_and_mixed_batches(sync_app: Soniq, db: asyncpg.Connection) -> None:
    later = await asyncio.to_thread(
        sync_app.enqueue_sync, "sync.add", x=1, scheduled_at=timedelta(hours=1)
    )
    row = await db.fetchrow(
        "SELECT scheduled_at - created_at AS d FROM soniq_jobs WHERE id = $1", later
    )
    assert timedelta(minutes=59) < row["d"] < timedelta(minutes=61)
    # A batch whose rows differ in queue goes through the general batch statement.
    ids = await asyncio.to_thread(
        sync_app.enqueue_many_sync, "sync.add", [{"x": 1}, {"x": 2}], queue="other"
    )
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs WHERE queue = 'other'") == 2
    assert len(set(ids)) == 2


async def test_the_same_checks_as_the_async_calls(sync_app: Soniq) -> None:
    with pytest.raises(UnknownJobError):
        await asyncio.to_thread(sync_app.enqueue_sync, "no.such.job")
    with pytest.raises(JobArgumentsError, match="x"):
        await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", y=1)
    with pytest.raises(ConfigurationError, match="timezone"):
        from datetime import datetime

        await asyncio.to_thread(
            sync_app.enqueue_sync, "sync.add", x=1, scheduled_at=datetime(2030, 1, 1)
        )
    with pytest.raises(JobArgumentsError, match="item 1"):
        await asyncio.to_thread(sync_app.enqueue_many_sync, "sync.add", [{"x": 1}, 7])
    # A value PostgreSQL refuses: the same error as the async call, nothing written.
    with pytest.raises(JobArgumentsError, match="cannot be stored"):
        await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x="nul \x00 inside")
    with pytest.raises(JobArgumentsError, match="cannot be stored"):
        await sync_app.enqueue("sync.add", x="nul \x00 inside")


async def test_inside_an_event_loop_it_points_to_await(sync_app: Soniq) -> None:
    with pytest.raises(RuntimeError, match=r"await app.enqueue\("):
        sync_app.enqueue_sync("sync.add", x=1)
    with pytest.raises(RuntimeError, match=r"await app.enqueue_many\("):
        sync_app.enqueue_many_sync("sync.add", [{"x": 1}])


async def test_many_threads_at_once(sync_app: Soniq, db: asyncpg.Connection) -> None:
    threads, each = 12, 25  # more threads than pool_max_size (10): some wait for a connection

    def produce(n: int) -> list[str]:
        return [sync_app.enqueue_sync("sync.add", x=n * 1000 + i) for i in range(each)]

    results = await asyncio.gather(*(asyncio.to_thread(produce, n) for n in range(threads)))
    ids = [i for batch in results for i in batch]
    assert len(set(ids)) == threads * each
    stored = await db.fetch("SELECT id::text FROM soniq_jobs")
    assert {r["id"] for r in stored} == set(ids)


async def test_a_worker_runs_sync_enqueued_jobs(sync_app: Soniq) -> None:
    job_id = await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x=40, y=2)
    async with running_worker(sync_app):
        job = await wait_status(sync_app, job_id, "done")
    assert job["result"] == 42


class Recording(Middleware):
    def __init__(self, seen: list[tuple[str, bool, str]]) -> None:
        self.seen = seen

    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        await asyncio.sleep(0)  # a middleware may really await: it has a loop to do it on
        await call_next(ctx)
        self.seen.append((ctx.jobs[0].job_name, ctx.batch, threading.current_thread().name))


async def test_enqueue_middlewares_run_for_sync_calls(sync_app: Soniq) -> None:
    seen: list[tuple[str, bool, str]] = []
    sync_app.middleware.add(Recording(seen))

    def produce() -> list[str]:
        threading.current_thread().name = "producer"
        return [
            sync_app.enqueue_sync("sync.add", x=1),
            *sync_app.enqueue_many_sync("sync.add", [{"x": 2}, {"x": 3}]),
        ]

    ids = await asyncio.to_thread(produce)
    assert seen == [("sync.add", False, "producer"), ("sync.add", True, "producer")]
    # The same middleware on the async side, and every row written.
    await sync_app.enqueue("sync.add", x=4)
    assert seen[-1][:2] == ("sync.add", False)
    for job_id in ids:
        assert await sync_app.get_job(job_id) is not None


async def test_the_producer_span_is_a_child_of_the_callers_span(
    sync_app: Soniq, db: asyncpg.Connection
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sync_app.instrument(otel=OtelConfig(tracer_provider=provider))
    tracer = provider.get_tracer("test")

    def view() -> str:
        with tracer.start_as_current_span("GET /checkout"):
            job_id: str = sync_app.enqueue_sync("sync.add", x=1)
            return job_id

    job_id = await asyncio.to_thread(view)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, request = spans["send sync.add"], spans["GET /checkout"]
    assert send.kind is SpanKind.PRODUCER
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert send.context.trace_id == request.context.trace_id
    # The job carries the producer span's context for the worker's consumer span.
    carried = await db.fetchval(
        "SELECT trace_context->>'traceparent' FROM soniq_jobs WHERE id = $1", job_id
    )
    assert carried is not None and f"{send.context.span_id:016x}" in carried
    assert trace.get_current_span() is trace.INVALID_SPAN  # nothing leaked into this thread


async def test_the_testing_kits_capture_sees_sync_enqueues(
    sync_app: Soniq, db: asyncpg.Connection
) -> None:
    from soniq.testing import capture

    with capture(sync_app) as jobs:
        await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x=7)
        await asyncio.to_thread(sync_app.enqueue_many_sync, "sync.add", [{"x": 8}])
        jobs.assert_enqueued("sync.add", x=7)
        jobs.assert_enqueued("sync.add", x=8)
    assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 0  # recorded, not written


def _fork_and_enqueue(app: Soniq) -> tuple[str, int]:
    """Fork; the child enqueues with ``app`` and writes the job id back through a pipe."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave at once, running nothing of the parent's
        code = 1
        try:
            os.write(write, app.enqueue_sync("sync.add", x=2).encode())
            app.close_sync()  # as an exiting process does: must not end the parent's sessions
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    _, status = os.waitpid(pid, 0)
    return out, os.waitstatus_to_exitcode(status)


async def test_a_forked_child_opens_its_own_connections(
    sync_app: Soniq, db: asyncpg.Connection
) -> None:
    """gunicorn --preload and the like: the parent enqueued before forking; the child must not
    use (or close) the parent's connections, and the parent's keep working."""
    first = await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x=1)
    from_child, exit_code = await asyncio.to_thread(_fork_and_enqueue, sync_app)
    assert exit_code == 0 and len(from_child) == 36, from_child
    last = await asyncio.to_thread(sync_app.enqueue_sync, "sync.add", x=3)  # parent's pool
    rows = await db.fetch("SELECT id::text FROM soniq_jobs ORDER BY seq")
    assert [r["id"] for r in rows] == [first, from_child, last]
