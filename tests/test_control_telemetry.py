"""Issue 16: dedupes, snoozes and cancels as tracing, metrics and logs show them."""

from __future__ import annotations

import asyncio
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from soniq import CancelResult, JobContext, Snooze, Soniq
from soniq_otel import OtelConfig
from soniq_prom import metrics_of, render_async
from tests.support.waiting import running_worker, wait_status
from tests.test_prom_support import samples, value


@pytest.fixture
def spans(app: Soniq) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.instrument(otel=OtelConfig(tracer_provider=provider), prometheus=True, logs=True)
    return exporter


async def test_dedupe_snooze_and_cancel_in_spans_metrics_and_logs(
    app: Soniq, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    started = asyncio.Event()

    @app.job(name="t.once", unique=True)
    async def once() -> None: ...

    @app.job(name="t.later")
    async def later(ctx: JobContext) -> None:
        if ctx.snoozes == 0:
            raise Snooze(0.05, reason="wait for it")

    @app.job(name="t.long")
    async def long() -> None:
        started.set()
        await asyncio.sleep(30)

    caplog.set_level(logging.INFO, logger="soniq.jobs")
    first = await app.enqueue(once, scheduled_at=3600)
    assert await app.enqueue(once, scheduled_at=3600) == first
    snoozy = await app.enqueue(later)
    doomed = await app.enqueue(long)
    async with running_worker(app):
        await wait_status(app, snoozy, "done")
        await asyncio.wait_for(started.wait(), 10)
        assert await app.cancel_job(doomed) == CancelResult.CANCEL_REQUESTED
        await wait_status(app, doomed, "cancelled", timeout=2)
        text = (await render_async(app)).body.decode()
    layer = metrics_of(app)
    assert layer is not None
    await layer.close()

    sends = [s for s in spans.get_finished_spans() if s.name == "send t.once"]
    assert [s.attributes.get("soniq.job.deduplicated") for s in sends] == [False, True]
    assert sends[1].attributes["messaging.message.id"] == first

    snoozed, done = [s for s in spans.get_finished_spans() if s.name == "process t.later"]
    assert snoozed.status.status_code != StatusCode.ERROR
    assert snoozed.attributes["soniq.job.outcome"] == "snoozed"
    event = next(e for e in snoozed.events if e.name == "soniq.job.snoozed")
    assert event.attributes == {
        "soniq.job.snooze_seconds": 0.05,
        "soniq.job.snooze_reason": "wait for it",
    }
    assert snoozed.attributes["soniq.job.attempt"] == done.attributes["soniq.job.attempt"] == 1
    (cancelled,) = [s for s in spans.get_finished_spans() if s.name == "process t.long"]
    assert cancelled.attributes["soniq.job.outcome"] == "cancelled"
    assert any(e.name == "soniq.job.cancelled" for e in cancelled.events)

    found = samples(text)
    assert value(found, "soniq_jobs_deduplicated_total", job_name="t.once") == 1
    assert value(found, "soniq_jobs_enqueued_total", job_name="t.once") == 1
    assert value(found, "soniq_job_attempts_total", job_name="t.later", outcome="snoozed") == 1
    assert value(found, "soniq_job_attempts_total", job_name="t.later", outcome="done") == 1
    assert value(found, "soniq_job_attempts_total", job_name="t.long", outcome="cancelled") == 1

    events = [getattr(r, "event", None) for r in caplog.records]
    assert "job.snoozed" in events and "job.cancelled" in events
    record = next(r for r in caplog.records if getattr(r, "event", None) == "job.snoozed")
    assert record.outcome == "snoozed" and record.snooze_reason == "wait for it"  # type: ignore[attr-defined]


async def test_paused_and_limited_queues_show_in_gauges(app: Soniq) -> None:
    app.instrument(prometheus=True)
    await app.pause_queue("mail")
    await app.set_queue_limit("reports", 3)
    text = (await render_async(app)).body.decode()
    layer = metrics_of(app)
    assert layer is not None
    await layer.close()
    found = samples(text)
    assert value(found, "soniq_queue_paused", queue="mail") == 1
    assert [s for s in found if s.name == "soniq_queue_paused" and s.labels["queue"] == "reports"]
    assert value(found, "soniq_queue_paused", queue="reports") == 0
    assert value(found, "soniq_queue_concurrency_limit", queue="reports") == 3
