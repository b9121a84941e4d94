"""Issue 19: capture_telemetry collects spans, metric samples and log records in every mode."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.trace import SpanKind

from soniq import Soniq
from soniq.logs import FailureLogMiddleware, LogMiddleware
from soniq.testing import capture, capture_telemetry, drain, inline
from soniq_otel import OtelConfig, TracingMiddleware
from soniq_prom import metrics_of

NO_DATABASE = "postgresql://nobody@127.0.0.1:9/none"


class Boom(Exception):
    pass


def jobs_of(app: Soniq) -> None:
    @app.job(name="greet")
    async def greet(name: str) -> str:
        return f"hello {name}"

    @app.job(name="fail", max_retries=1)
    async def fail() -> None:
        raise Boom("no")


async def test_inline_spans_metrics_and_logs_of_the_real_layers() -> None:
    app = Soniq(NO_DATABASE)
    jobs_of(app)
    with capture_telemetry(app) as telemetry, inline(app):
        await app.enqueue("greet", name="ada")
        await app.enqueue("fail")

    send = telemetry.spans_named("send greet")
    [process] = telemetry.spans_named("process greet")
    assert len(send) == 1 and send[0].kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    # The attempt is a child of its enqueue: the trace context went through the job record.
    assert process.context.trace_id == send[0].context.trace_id
    assert [s.attributes["soniq.job.attempt"] for s in telemetry.spans_named("process fail")] == [
        1,
        2,
    ]

    metric = telemetry.metric
    assert metric("soniq_jobs_enqueued_total", queue="default", job_name="greet") == 1
    assert (
        metric("soniq_job_attempts_total", queue="default", job_name="fail", outcome="retry") == 1
    )
    assert (
        metric("soniq_job_attempts_total", queue="default", job_name="fail", outcome="dead_letter")
        == 1
    )
    assert any(s.name == "soniq_job_duration_seconds_count" for s in telemetry.samples)

    # Captured at INFO, as a worker logs by default: an attempt is one record, its end
    # (job.started is DEBUG).
    assert telemetry.events == ["job.done", "job.retry", "job.dead_letter"]
    [dead] = [r for r in telemetry.logs if getattr(r, "event", None) == "job.dead_letter"]
    assert dead.job_name == "fail" and dead.error == "no"  # type: ignore[attr-defined]


async def test_the_apps_layers_are_put_back_as_they_were() -> None:
    app = Soniq(NO_DATABASE)
    jobs_of(app)
    mine = OtelConfig(record_args=True)
    app.instrument(otel=mine)
    before = list(app.middleware)
    with capture_telemetry(app) as telemetry, capture(app) as jobs:
        assert metrics_of(app) is not None
        assert any(isinstance(m, LogMiddleware) for m in app.middleware)
        await app.enqueue("greet", name="bo")
        await jobs.drain()
    # The user's tracing options stayed in force while capturing (record_args).
    [process] = telemetry.spans_named("process greet")
    assert process.attributes["soniq.job.args.name"] == "bo"
    layers = list(app.middleware)
    assert [type(m) for m in layers] == [type(m) for m in before]
    assert [type(m) for m in before] == [TracingMiddleware, FailureLogMiddleware]
    assert layers[0].config is mine  # type: ignore[attr-defined]
    assert metrics_of(app) is None and app.middleware.telemetry_error_listeners == []


@pytest.fixture
async def app(soniq_database: str) -> AsyncIterator[Soniq]:
    app = Soniq(soniq_database)
    jobs_of(app)
    yield app
    await app.close()


async def test_a_real_drain_is_observed_the_same_way(app: Soniq) -> None:
    with capture_telemetry(app) as telemetry:
        await app.enqueue("greet", name="cy")
        outcomes = await drain(app)
    assert outcomes.results("greet") == ["hello cy"]
    assert telemetry.span_names.count("process greet") == 1
    assert "worker.started" in telemetry.events and "job.done" in telemetry.events
    done = telemetry.metric(
        "soniq_job_attempts_total", queue="default", job_name="greet", outcome="done"
    )
    assert done == 1
