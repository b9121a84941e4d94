"""Issue 4, points 1, 6 and 7: a real worker process exports over OTLP (gRPC and HTTP) to a
receiver the test runs, configured only by OTEL_* variables; the trace it receives is whole."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.proto.trace.v1.trace_pb2 import Status as StatusProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from soniq import Soniq
from soniq_otel import OtelConfig
from tests.support import otlp_worker
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.otlp_worker import otlp_exporter, stop_worker
from tests.support.waiting import wait_status, wait_until

APP_MODULE = textwrap.dedent(
    """
    import os

    from opentelemetry import trace

    from soniq import JobContext, Soniq

    app = Soniq(os.environ["SONIQ_DATABASE_URL"], poll_interval=0.2, grace_period=5)

    if os.environ.get("TEST_FLUSH_TIMEOUT"):
        from soniq_otel import OtelConfig

        app.instrument(otel=OtelConfig(flush_timeout=float(os.environ["TEST_FLUSH_TIMEOUT"])))


    @app.job(name="otlp.flaky", max_retries=2, retry_backoff=0.05)
    async def flaky(order: int, ctx: JobContext) -> int:
        with trace.get_tracer("job-code").start_as_current_span("charge card"):
            if ctx.attempt == 1:
                raise RuntimeError("card service unavailable")
        return order


    @app.job(name="otlp.quick")
    def quick(n: int) -> int:
        return n
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "otel_test_app.py").write_text(APP_MODULE)
    return tmp_path


def start_worker(app_dir: Path, database_url: str, *args: str, **env: str) -> subprocess.Popen[str]:
    return otlp_worker.start_worker(
        app_dir, database_url, *args, worker_app="otel_test_app:app", **env
    )


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_worker_process_exports_a_whole_trace_over_otlp(
    protocol: str, receiver: OtlpReceiver, app_dir: Path, clean_db: str
) -> None:
    # The producer: this process, with its own provider exporting to the same receiver.
    provider = SdkTracerProvider(
        resource=Resource.create({"service.name": "shop-web"}), shutdown_on_exit=False
    )
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter("traces", protocol, receiver)))
    app = Soniq(clean_db)
    app.instrument(otel=OtelConfig(tracer_provider=provider))

    @app.job(name="otlp.flaky")
    async def flaky(order: int) -> int:  # the worker process has the real body
        return order

    try:
        with provider.get_tracer("web").start_as_current_span("POST /checkout"):
            job_id = await app.enqueue(flaky, order=7)
        provider.force_flush()

        endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
        worker = start_worker(
            app_dir,
            clean_db,
            "--instrument",
            "otel",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
            OTEL_SERVICE_NAME="shop-worker",
            # Nothing is exported on a timer for a minute: what arrives came from the flush
            # on worker shutdown.
            OTEL_BSP_SCHEDULE_DELAY="60000",
        )
        try:
            job = await wait_status(app, job_id, "done", timeout=60)
        finally:
            code, output, _ = await stop_worker(worker)
        assert job["attempts"] == 2 and job["result"] == 7
        assert code == 0, output
    finally:
        await app.close()
        provider.shutdown()

    def arrived() -> list[ReceivedSpan] | None:
        spans = receiver.spans()
        return spans if len(spans) >= 6 else None

    spans = await wait_until(arrived, timeout=30, what="six spans at the OTLP receiver")
    by_name: dict[str, list[ReceivedSpan]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    transport = "grpc" if protocol == "grpc" else "http"
    assert {s.transport for s in spans} == {transport}

    [request] = by_name["POST /checkout"]
    [send] = by_name["send otlp.flaky"]
    first, second = sorted(
        by_name["process otlp.flaky"], key=lambda s: s.attributes["soniq.job.attempt"]
    )
    charges = by_name["charge card"]
    assert len(charges) == 2
    assert len(spans) == 6

    # One trace, as Jaeger would show it: request > send > (attempt 1, attempt 2) > charge.
    assert {s.trace_id for s in spans} == {request.trace_id}
    assert request.parent_span_id == ""
    assert send.parent_span_id == request.span_id
    assert first.parent_span_id == send.span_id
    assert second.parent_span_id == send.span_id
    assert sorted(c.parent_span_id for c in charges) == sorted([first.span_id, second.span_id])

    assert (request.service, send.service) == ("shop-web", "shop-web")
    assert {first.service, second.service} == {"shop-worker"}
    assert send.kind == SpanProto.SpanKind.SPAN_KIND_PRODUCER
    assert first.kind == second.kind == SpanProto.SpanKind.SPAN_KIND_CONSUMER

    assert [(ln.span_id, ln.attributes) for ln in first.links] == [
        (send.span_id, {"soniq.link.type": "enqueue"})
    ]
    assert sorted((ln.span_id, ln.attributes["soniq.link.type"]) for ln in second.links) == sorted(
        [(send.span_id, "enqueue"), (first.span_id, "previous_attempt")]
    )
    assert first.status_code == StatusProto.StatusCode.STATUS_CODE_ERROR
    assert first.attributes["soniq.job.outcome"] == "retry"
    assert first.attributes["error.type"] == "RuntimeError"
    assert [name for name, _ in first.events] == ["exception"]
    assert second.status_code == StatusProto.StatusCode.STATUS_CODE_UNSET
    assert second.attributes["soniq.job.outcome"] == "done"
    assert second.attributes["messaging.system"] == "soniq"
    assert second.attributes["messaging.message.id"] == job_id


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A collector that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


async def test_unanswering_collector_delays_neither_jobs_nor_exit(
    black_hole: str, app_dir: Path, clean_db: str
) -> None:
    app = Soniq(clean_db)

    @app.job(name="otlp.quick")
    def quick(n: int) -> int:
        return n

    try:
        job_ids = await app.enqueue_many(quick, [{"n": i} for i in range(30)])
        worker = start_worker(
            app_dir,
            clean_db,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_EXPORTER_OTLP_ENDPOINT=black_hole,
            OTEL_EXPORTER_OTLP_TIMEOUT="60",  # each export hangs for a minute
            OTEL_BSP_SCHEDULE_DELAY="1",  # and starts at once
            OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1",
            TEST_FLUSH_TIMEOUT="1",
        )
        try:
            for j in job_ids:
                await wait_status(app, j, "done", timeout=60)
        finally:
            code, output, took = await stop_worker(worker, timeout=60)
    finally:
        await app.close()
    assert code == 0, output
    # The 1 s flush bound, plus interpreter start-up work on a busy machine; waiting for the
    # exporter would take a minute.
    assert took < 20, output
    assert "not exported within 1s" in output


async def test_misconfigured_exporter_never_fails_a_job(app_dir: Path, clean_db: str) -> None:
    app = Soniq(clean_db)

    @app.job(name="otlp.quick")
    def quick(n: int) -> int:
        return n

    try:
        job_id = await app.enqueue(quick, n=5)
        worker = start_worker(
            app_dir, clean_db, "--instrument", "otel", OTEL_EXPORTER_OTLP_PROTOCOL="http/json"
        )
        try:
            job = await wait_status(app, job_id, "done", timeout=60)
        finally:
            code, output, _ = await stop_worker(worker)
    finally:
        await app.close()
    assert job["result"] == 5
    assert code == 0, output
    assert "http/json" in output  # reported once, naming the setting


def test_receiver_rejects_what_a_collector_would(receiver: OtlpReceiver) -> None:
    """The receiver is strict enough that a pass above means a well-formed OTLP export."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{receiver.http_endpoint}/v1/traces",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 415
    assert receiver.spans() == []


def test_soniq_itself_needs_no_sdk() -> None:
    """Only the API may be imported by ``soniq``; the SDK and exporters come with soniq_otel."""
    script = textwrap.dedent(
        """
        import sys
        import soniq
        app = soniq.Soniq("postgresql://nobody@127.0.0.1:1/none")
        app.worker()
        heavy = sorted(m for m in sys.modules
                       if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter", "grpc")))
        print(heavy)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout
