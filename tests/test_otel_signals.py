"""Issue 20, point 4: a real worker process exports traces, metrics and logs over OTLP (gRPC and
HTTP) to a receiver the test runs, switched on only by the standard OTEL_* variables; the
producer exports its enqueue metrics to the same receiver. Names, units, attributes and counts
are checked against the jobs run, and every log record's trace id against its attempt's span."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from soniq import Soniq
from soniq_otel import OtelConfig
from tests.support.otlp_receiver import OtlpReceiver, ReceivedLog, ReceivedPoint, ReceivedSpan
from tests.support.otlp_worker import otlp_exporter, start_worker, stop_worker
from tests.support.waiting import running_worker, wait_status, wait_until

QUICK_JOBS = 12

APP_MODULE = textwrap.dedent(
    """
    import logging
    import os

    from soniq import JobContext, Soniq

    app = Soniq(os.environ["SONIQ_DATABASE_URL"], poll_interval=0.2, grace_period=5)
    log = logging.getLogger("shop.jobs")


    @app.job(name="signals.flaky", max_retries=2, retry_backoff=0.05)
    async def flaky(order: int, ctx: JobContext) -> int:
        log.info("charging order %s", order, extra={"order": order})
        if ctx.attempt == 1:
            raise RuntimeError("card service unavailable")
        return order


    @app.job(name="signals.quick")
    def quick(n: int) -> int:
        return n
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "signals_app.py").write_text(APP_MODULE)
    return tmp_path


def last_points(points: list[ReceivedPoint], name: str, service: str) -> list[ReceivedPoint]:
    """The latest point of each attribute set (metrics are cumulative: each export repeats the
    total so far)."""
    latest: dict[str, ReceivedPoint] = {}
    for p in points:
        if p.name == name and p.service == service:
            latest[json.dumps(p.attributes, sort_keys=True)] = p
    return list(latest.values())


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_worker_exports_traces_metrics_and_logs_over_otlp(
    protocol: str, receiver: OtlpReceiver, app_dir: Path, clean_db: str
) -> None:
    # The producer: this process, exporting its enqueue metrics to the same receiver.
    reader = PeriodicExportingMetricReader(
        otlp_exporter("metrics", protocol, receiver), export_interval_millis=60_000
    )
    producer = MeterProvider(
        resource=Resource.create({"service.name": "shop-web"}),
        metric_readers=[reader],
        shutdown_on_exit=False,
    )
    app = Soniq(clean_db)
    app.instrument(otel=OtelConfig(traces=False, metrics=True, meter_provider=producer))

    @app.job(name="signals.flaky")
    async def flaky(order: int) -> int:  # the worker process has the real body
        return order

    @app.job(name="signals.quick")
    def quick(n: int) -> int:
        return n

    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    try:
        flaky_id = await app.enqueue(flaky, order=7)
        quick_ids = await app.enqueue_many(quick, [{"n": i} for i in range(QUICK_JOBS)])
        producer.force_flush()
        worker = start_worker(
            app_dir,
            clean_db,
            "--instrument",
            "otel",
            "--instrument",
            "logs",
            "--log-format",
            "json",
            worker_app="signals_app:app",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="shop-worker",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_METRIC_EXPORT_INTERVAL="300",
        )
        try:
            await wait_status(app, flaky_id, "done", timeout=60)
            for job_id in quick_ids:
                await wait_status(app, job_id, "done", timeout=60)
            # A queue-gauge export while the worker is live, before it is stopped.
            await wait_until(
                lambda: any(
                    p.name == "soniq.workers.live" and p.value >= 1 for p in receiver.points()
                ),
                timeout=30,
                what="soniq.workers.live from the worker",
            )
        finally:
            code, output, _ = await stop_worker(worker)
        assert code == 0, output
    finally:
        await app.close()
        producer.shutdown()

    attempts = QUICK_JOBS + 2
    transport = "grpc" if protocol == "grpc" else "http"

    def process_spans() -> list[ReceivedSpan] | None:
        spans = [s for s in receiver.spans() if s.name.startswith("process ")]
        return spans if len(spans) >= attempts else None

    def done_logs() -> list[ReceivedLog] | None:
        logs = [r for r in receiver.logs() if r.attributes.get("event") == "job.done"]
        return logs if len(logs) >= QUICK_JOBS + 1 else None

    spans = await wait_until(process_spans, timeout=30, what="a span per attempt")
    await wait_until(done_logs, timeout=30, what="a job.done record per job")
    assert len(spans) == attempts
    assert {s.transport for s in spans} == {transport}

    # -- metrics ---------------------------------------------------------------------------
    points = receiver.points()
    assert {p.transport for p in points} == {transport}

    sent_points = last_points(points, "messaging.client.sent.messages", "shop-web")
    assert {p.unit for p in sent_points} == {"{message}"}
    assert {p.attributes["soniq.job.name"]: p.value for p in sent_points} == {
        "signals.flaky": 1,
        "signals.quick": QUICK_JOBS,
    }
    for p in sent_points:
        assert p.monotonic and p.kind == "sum"
        assert p.attributes["messaging.system"] == "soniq"
        assert p.attributes["messaging.operation.name"] == "send"
        assert p.attributes["messaging.destination.name"] == "default"
    enqueue_calls = last_points(points, "messaging.client.operation.duration", "shop-web")
    assert sum(p.value for p in enqueue_calls) == 2  # one enqueue and one enqueue_many
    assert {p.unit for p in enqueue_calls} == {"s"}

    consumed = last_points(points, "messaging.client.consumed.messages", "shop-worker")
    assert {p.attributes["soniq.job.name"]: p.value for p in consumed} == {
        "signals.flaky": 2,
        "signals.quick": QUICK_JOBS,
    }
    assert {p.unit for p in consumed} == {"{message}"}

    def by_outcome(name: str) -> dict[tuple[str, str, str | None], float]:
        return {
            (
                p.attributes["soniq.job.name"],
                p.attributes["soniq.job.outcome"],
                p.attributes.get("error.type"),
            ): p.value
            for p in last_points(points, name, "shop-worker")
        }

    expected = {
        ("signals.flaky", "retry", "RuntimeError"): 1,
        ("signals.flaky", "done", None): 1,
        ("signals.quick", "done", None): QUICK_JOBS,
    }
    assert by_outcome("soniq.job.attempts") == expected
    assert by_outcome("messaging.process.duration") == expected  # histogram counts
    durations = last_points(points, "messaging.process.duration", "shop-worker")
    assert {p.unit for p in durations} == {"s"} and {p.kind for p in durations} == {"histogram"}
    for p in durations:
        assert p.attributes["messaging.operation.name"] == "process"
        assert p.attributes["messaging.system"] == "soniq"
    # Exemplars point at attempt spans that were exported (the SDK sends each exemplar once,
    # in the export after its measurement, so every export is looked at).
    span_traces = {s.trace_id for s in spans}
    exemplars = {
        t for p in points if p.name == "messaging.process.duration" for t in p.exemplar_trace_ids
    }
    assert exemplars and exemplars <= span_traces

    waits = last_points(points, "soniq.job.queue_wait", "shop-worker")
    assert sum(p.value for p in waits) == attempts and {p.unit for p in waits} == {"s"}

    jobs_gauge = [p for p in points if p.name == "soniq.queue.jobs" and p.service == "shop-worker"]
    assert jobs_gauge and {p.kind for p in jobs_gauge} == {"gauge"}
    assert {p.unit for p in jobs_gauge} == {"{job}"}
    assert {p.attributes["soniq.job.state"] for p in jobs_gauge} == {
        "ready",
        "scheduled",
        "processing",
        "dead_letter",
    }
    assert {p.attributes["messaging.destination.name"] for p in jobs_gauge} == {"default"}
    ages = [p for p in points if p.name == "soniq.queue.oldest_ready_age"]
    assert ages and {p.unit for p in ages} == {"s"}

    # -- logs ------------------------------------------------------------------------------
    logs = [r for r in receiver.logs() if r.service == "shop-worker"]
    assert {r.transport for r in logs} == {transport}
    span_of = {
        (s.attributes["messaging.message.id"], s.attributes["soniq.job.attempt"]): s for s in spans
    }
    attempt_logs = [r for r in logs if "job_id" in r.attributes]
    events = [r.attributes.get("event") for r in attempt_logs]
    assert events.count("job.done") == QUICK_JOBS + 1
    assert events.count("job.retry") == 1
    own = [r for r in attempt_logs if r.scope == "shop.jobs"]
    assert [r.body for r in own] == ["charging order 7", "charging order 7"]
    assert {r.attributes["order"] for r in own} == {7}
    for record in attempt_logs:
        span = span_of[(record.attributes["job_id"], record.attributes["attempt"])]
        assert (record.trace_id, record.span_id) == (span.trace_id, span.span_id), record
        assert record.attributes["job_name"] == span.attributes["soniq.job.name"]
    [retry] = [r for r in attempt_logs if r.attributes.get("event") == "job.retry"]
    assert retry.severity_text == "WARN" and retry.severity_number == 13
    assert retry.attributes["error_type"] == "RuntimeError"
    assert retry.attributes["outcome"] == "retry"
    assert retry.body == "Job failed; will retry"
    done = next(r for r in attempt_logs if r.attributes.get("event") == "job.done")
    assert done.severity_text == "INFO" and done.scope == "soniq.jobs"
    assert {"queue", "attempt", "max_attempts", "worker_id", "outcome", "duration_ms"} <= set(
        done.attributes
    )

    # The JSON stream is still there, beside the OTLP records.
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("event") == "job.done") == QUICK_JOBS + 1


async def test_misconfigured_metrics_and_logs_exporters_never_fail_a_job(
    app_dir: Path, clean_db: str
) -> None:
    app = Soniq(clean_db)

    @app.job(name="signals.quick")
    def quick(n: int) -> int:
        return n

    try:
        job_ids = await app.enqueue_many(quick, [{"n": i} for i in range(20)])
        worker = start_worker(
            app_dir,
            clean_db,
            "--instrument",
            "otel",
            "--instrument",
            "logs",
            worker_app="signals_app:app",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
        )
        try:
            for job_id in job_ids:
                await wait_status(app, job_id, "done", timeout=60)
        finally:
            code, output, _ = await stop_worker(worker)
    finally:
        await app.close()
    assert code == 0, output
    # Each signal reports the setting once, at start-up; twenty jobs add nothing.
    reports = [line for line in output.splitlines() if "failed" in line and "http/json" in line]
    assert 1 <= len(reports) <= 3, output


def gauge_points(reader: Any, name: str) -> list[tuple[dict[str, Any], float]]:
    found = []
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    found.extend((dict(p.attributes), p.value) for p in metric.data.data_points)
    return found


async def test_queue_gauges_have_one_reporter_in_a_fleet(clean_db: str) -> None:
    """Two apps (as two processes would be) with OTel metrics, both running a worker: the
    queue gauges come from exactly one of them, and count every queued job once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    apps, readers = [], []
    for _ in range(2):
        reader = InMemoryMetricReader()
        app = Soniq(clean_db, poll_interval=0.2)
        app.instrument(
            otel=OtelConfig(
                traces=False,
                metrics=True,
                meter_provider=MeterProvider(metric_readers=[reader]),
                queue_state_interval=0.1,
            )
        )

        @app.job(name="signals.later")
        async def later(n: int) -> int:
            return n

        apps.append(app)
        readers.append(reader)
    try:
        await apps[0].enqueue_many("signals.later", [{"n": i} for i in range(7)], scheduled_at=3600)
        async with (
            running_worker(apps[0], queues=["elsewhere"]),
            running_worker(apps[1], queues=["elsewhere"]),
        ):
            # The SDK collects on the reader's caller: off the loop, as its export thread does.
            async def reports() -> list[list[tuple[dict[str, Any], float]]] | None:
                seen = [
                    await asyncio.to_thread(gauge_points, r, "soniq.queue.jobs") for r in readers
                ]
                return seen if any(seen) else None

            seen = await wait_until(reports, timeout=30, what="a queue-gauge report")
            live = [await asyncio.to_thread(gauge_points, r, "soniq.workers.live") for r in readers]
    finally:
        for app in apps:
            await app.close()
    assert sorted(bool(s) for s in seen) == [False, True]
    [reported] = [s for s in seen if s]
    by_state = {attrs["soniq.job.state"]: value for attrs, value in reported}
    assert by_state == {"ready": 0, "scheduled": 7, "processing": 0, "dead_letter": 0}
    assert {attrs["messaging.destination.name"] for attrs, _ in reported} == {"default"}
    assert sorted(len(points) for points in live) == [0, 1]
    assert max(points[0][1] for points in live if points) == 2
