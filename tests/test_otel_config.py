"""Issue 20, point 1: which OpenTelemetry signals are on (OtelConfig, its dict form, the SDK's
OTEL_METRICS_EXPORTER / OTEL_LOGS_EXPORTER), and the application's global meter and logger
providers used when it set them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from soniq import Soniq
from soniq.errors import ConfigurationError
from soniq.logs import FailureLogMiddleware, LogMiddleware
from soniq_otel import OtelConfig, OtelLogs, OtelMetrics, TracingMiddleware


def layers(app: Soniq) -> list[type]:
    # The layers instrument() added: every app also starts with the default failure log.
    return [type(layer) for layer in app.middleware if not isinstance(layer, FailureLogMiddleware)]


@pytest.fixture(autouse=True)
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_traces_only() -> None:
    config = OtelConfig()
    assert (config.traces, config.metrics, config.logs) == (True, False, False)
    app = Soniq("postgresql://nobody@127.0.0.1:1/none")
    app.instrument(otel=True)
    assert layers(app) == [TracingMiddleware]


def test_dict_form_switches_metrics_and_logs_on() -> None:
    app = Soniq("postgresql://nobody@127.0.0.1:1/none")
    app.instrument(otel={"metrics": True, "logs": True})
    # OTLP logs need Soniq's job events, so the log layer comes with them.
    assert layers(app) == [TracingMiddleware, LogMiddleware, OtelLogs, OtelMetrics]
    [otlp_logs] = [m for m in app.middleware if isinstance(m, OtelLogs)]
    import logging

    assert otlp_logs.handler in logging.getLogger().handlers
    # A new config replaces the layers, removing those it switches off.
    app.instrument(otel={"traces": False, "metrics": True})
    assert layers(app) == [LogMiddleware, OtelMetrics]
    assert otlp_logs.handler not in logging.getLogger().handlers


def test_the_sdk_variables_switch_signals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    # A set variable wins over the config, both ways, as it does over the SDK's defaults.
    config = OtelConfig(logs=True)
    assert (config.metrics_on, config.logs_on) == (True, False)
    app = Soniq("postgresql://nobody@127.0.0.1:1/none")
    app.instrument(otel=config)
    assert layers(app) == [TracingMiddleware, OtelMetrics]
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    assert not OtelConfig(metrics=True).metrics_on
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "console,otlp")
    assert OtelConfig().logs_on


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"metrics": "yes"}, "OtelConfig.metrics"),
        ({"max_queues": 0}, "OtelConfig.max_queues"),
        ({"queue_state_interval": -1}, "OtelConfig.queue_state_interval"),
        ({"overflow_label": ""}, "OtelConfig.overflow_label"),
    ],
)
def test_bad_options_are_named(options: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigurationError, match=named):
        OtelConfig(**options)  # type: ignore[arg-type]


GLOBAL_PROVIDERS = textwrap.dedent(
    """
    import asyncio, logging, sys

    from opentelemetry import _logs, metrics, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from soniq import Soniq

    # The application sets its providers after building the app, before any job runs.
    app = Soniq(sys.argv[1])
    app.instrument(otel={"metrics": True, "logs": True})

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    records = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(records))
    _logs.set_logger_provider(logger_provider)
    logging.getLogger().setLevel(logging.INFO)

    @app.job(name="globals.job")
    async def job(n: int) -> int:
        logging.getLogger("globals.code").info("in the job")
        return n

    async def main() -> None:
        await app.setup()
        pool = await app.pool()
        await pool.execute("TRUNCATE soniq_jobs, soniq_workers")
        await app.enqueue_many(job, [{"n": i} for i in range(3)])
        await app.run_worker(run_once=True)
        await app.close()

    asyncio.run(main())
    attempts = [
        point.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "soniq.job.attempts"
        for point in m.data.data_points
    ]
    process = {
        (s.context.trace_id, s.context.span_id) for s in spans.get_finished_spans()
        if s.name == "process globals.job"
    }
    exported = [r.log_record for r in records.get_finished_logs()]
    done = [r for r in exported if (r.attributes or {}).get("event") == "job.done"]
    own = [r for r in exported if r.body == "in the job"]
    print("attempts", sum(attempts))
    print("spans", len(process))
    print("done", len(done), {(r.trace_id, r.span_id) for r in done} == process)
    print("own", len(own), {(r.trace_id, r.span_id) for r in own} == process)
    """
)


def test_global_providers_are_used_when_the_application_set_them(clean_db: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROVIDERS, clean_db],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == [
        "attempts 3",
        "spans 3",
        "done 3 True",
        "own 3 True",
    ], done.stdout + done.stderr
