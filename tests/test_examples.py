"""Each example runs, for real, against the test database.

quickstart.py as a user runs it (a subprocess); compose_app.py's jobs and producer in-process
with a worker; fastapi_app.py through httpx's ASGI transport with its lifespan, a worker, and
the OpenTelemetry SDK's in-memory exporter for the one-trace check.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.waiting import running_worker, wait_status, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _fresh_import(name: str) -> ModuleType:
    # The examples read SONIQ_DATABASE_URL when imported, as a user's module would.
    sys.modules.pop(name, None)
    return importlib.import_module(name)


# -- quickstart.py ----------------------------------------------------------------------------


async def test_quickstart_runs_as_a_user_runs_it(clean_db: str, db: asyncpg.Connection) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "examples/quickstart.py"],
        cwd=ROOT,
        env={**os.environ, "SONIQ_DATABASE_URL": clean_db},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("enqueued ")
    job_id = lines[0].removeprefix("enqueued ")
    assert lines[-1] == "done after 1 attempt(s): welcome mail sent to ada@example.com (user 1)"
    row = await db.fetchrow("SELECT status, job_name, queue FROM soniq_jobs WHERE id = $1", job_id)
    assert row is not None
    assert dict(row) == {"status": "done", "job_name": "emails.send_welcome", "queue": "emails"}


# -- compose_app.py ---------------------------------------------------------------------------


@pytest.fixture
def compose_app(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("SONIQ_DATABASE_URL", clean_db)
    module = _fresh_import("examples.compose_app")
    yield module
    sys.modules.pop("examples.compose_app", None)


async def test_compose_app_ticks_show_retries_and_dead_letters(compose_app: ModuleType) -> None:
    soniq = compose_app.app
    # Short timings for the test: a dead worker's jobs come back fast, shutdown is quick.
    soniq.configure(poll_interval=0.5, lease_seconds=3, grace_period=5)
    try:
        first = await compose_app.enqueue_tick(soniq, 0)  # an order that never succeeds
        retried = await compose_app.enqueue_tick(soniq, compose_app.RETRY_EVERY)
        plain = await compose_app.enqueue_tick(soniq, 1)
        # Tick 0 also enqueues a batch of reports; tick 1 only an order and an email.
        assert len(first) == 2 + 5 and len(plain) == 2
        async with running_worker(soniq, concurrency=8):
            dead = await wait_status(soniq, first[0], "dead_letter", timeout=30)
            again = await wait_status(soniq, retried[0], "done", timeout=30)
            for job_id in first[1:] + plain:
                await wait_status(soniq, job_id, "done", timeout=30)
        assert dead["attempts"] == 3 and "PaymentDeclined" in dead["last_error"]
        assert again["attempts"] == 2
        assert again["result"] == {"order_id": 10_000 + compose_app.RETRY_EVERY, "status": "paid"}
        names = {(await soniq.get_job(i))["job_name"] for i in first}  # type: ignore[index]
        assert names == {"orders.process", "emails.send", "reports.build"}
    finally:
        await soniq.close()


async def test_compose_app_producer_stops_when_asked(compose_app: ModuleType) -> None:
    soniq = compose_app.app
    try:
        assert await compose_app.produce(soniq, interval=0, ticks=3) == 3
        stop = asyncio.Event()
        producing = asyncio.create_task(compose_app.produce(soniq, interval=30, stop=stop))
        await wait_until(soniq.queue_status, what="the first tick")
        stop.set()
        # Stopping does not wait out the 30 s interval, and the tick under way completes.
        assert await asyncio.wait_for(producing, 10) == 1
        by_queue = {row["queue"]: row["ready"] for row in await soniq.queue_status()}
        # Three ticks (0, 1, 2) and then tick 0 again: orders, emails and two report batches.
        assert by_queue == {"orders": 4, "emails": 4, "reports": 10}
    finally:
        await soniq.close()


# -- fastapi_app.py ---------------------------------------------------------------------------


def _memory_exporter() -> InMemorySpanExporter:
    """Collect every span of this process: the global SDK provider gets one more processor."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    assert isinstance(trace.get_tracer_provider(), TracerProvider)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = _memory_exporter()
    yield exporter
    exporter.shutdown()  # later spans are not kept


@pytest.fixture
def fastapi_app(
    clean_db: str, monkeypatch: pytest.MonkeyPatch, spans: InMemorySpanExporter
) -> Iterator[ModuleType]:
    # The span exporter is in place first: the example then keeps the host's tracer provider.
    monkeypatch.setenv("SONIQ_DATABASE_URL", clean_db)
    module = _fresh_import("examples.fastapi_app")
    yield module
    sys.modules.pop("examples.fastapi_app", None)


@asynccontextmanager
async def _client(module: ModuleType) -> AsyncIterator[httpx.AsyncClient]:
    api = module.api
    # httpx's transport does not run the ASGI lifespan; the app's own lifespan context does.
    async with api.router.lifespan_context(api):
        pool = await module.soniq.pool()
        await pool.execute("TRUNCATE example_orders")
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            yield client


async def test_fastapi_order_and_its_job_commit_together(
    fastapi_app: ModuleType, db: asyncpg.Connection
) -> None:
    async with _client(fastapi_app) as client:
        response = await client.post("/orders", json={"item": "book", "quantity": 2})
        assert response.status_code == 201, response.text
        order = response.json()
        job = await db.fetchrow("SELECT status, job_name, args FROM soniq_jobs")
        assert job is not None and job["status"] == "queued"
        assert job["job_name"] == "orders.confirm"

        async with running_worker(fastapi_app.soniq):
            done = await wait_status(fastapi_app.soniq, order["job_id"], "done")
        assert done["result"] == f"Order {order['order_id']}: 2 x book (attempt 1)"

        page = await client.get(f"/orders/{order['order_id']}/confirmation")
        assert page.status_code == 200
        assert page.json() == {
            "job_id": order["job_id"],
            "status": "done",
            "result": done["result"],
        }


async def test_fastapi_failed_request_rolls_back_the_order_and_the_job(
    fastapi_app: ModuleType, db: asyncpg.Connection
) -> None:
    async with _client(fastapi_app) as client:
        response = await client.post("/orders", json={"item": "lamp", "quantity": 50})
        assert response.status_code == 409
        assert response.json() == {"detail": "not enough lamp in stock"}
        assert await db.fetchval("SELECT count(*) FROM example_orders") == 0
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 0
        # The app keeps serving after the rollback.
        ok = await client.post("/orders", json={"item": "lamp", "quantity": 1})
        assert ok.status_code == 201
        assert await db.fetchval("SELECT count(*) FROM soniq_jobs") == 1


def _one(spans: list[ReadableSpan], kind: SpanKind, prefix: str) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind and s.name.startswith(prefix)]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


async def test_fastapi_request_and_job_are_one_trace(
    fastapi_app: ModuleType, spans: InMemorySpanExporter
) -> None:
    async with _client(fastapi_app) as client:
        response = await client.post("/orders", json={"item": "book", "quantity": 1})
        assert response.status_code == 201
        job_id = response.json()["job_id"]
        async with running_worker(fastapi_app.soniq):
            await wait_status(fastapi_app.soniq, job_id, "done")

    def finished() -> list[ReadableSpan]:
        got = list(spans.get_finished_spans())
        return got if any(s.name == "process orders.confirm" for s in got) else []

    collected = await wait_until(finished, what="the job's span")
    request = _one(collected, SpanKind.SERVER, "POST")
    send = _one(collected, SpanKind.PRODUCER, "send orders.confirm")
    process = _one(collected, SpanKind.CONSUMER, "process orders.confirm")
    render = _one(collected, SpanKind.INTERNAL, "render confirmation")

    trace_id = request.context.trace_id
    assert {s.context.trace_id for s in (send, process, render)} == {trace_id}
    # request -> send (inside the handler) -> process (in the worker) -> the job's own span.
    assert send.parent is not None and send.parent.span_id == request.context.span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert render.parent is not None and render.parent.span_id == process.context.span_id
    attributes: dict[str, Any] = dict(process.attributes or {})
    assert attributes["messaging.system"] == "soniq"
    assert attributes["messaging.message.id"] == job_id
