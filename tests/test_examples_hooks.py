"""The hooks page's four practical examples (examples/hooks/) run against a real worker and do
what the page says: JSON log lines, Prometheus samples, one dead-letter alert, spans."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import prometheus_client
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from soniq import Soniq

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "hooks"


@pytest.fixture
def load_example(clean_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Import an example file as a fresh module whose app uses the test database."""
    loaded: list[str] = []

    def load(name: str) -> ModuleType:
        monkeypatch.setenv("SONIQ_DATABASE_URL", clean_db)
        module_name = f"soniq_hooks_example_{name}"
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        loaded.append(module_name)
        spec.loader.exec_module(module)
        return module

    yield load
    for module_name in loaded:
        sys.modules.pop(module_name, None)


def job_name(app: Soniq, func: Any) -> str:
    return next(spec.name for spec in app.registry if spec.func is func)


async def test_structured_logging_example_logs_one_json_line_per_event(
    load_example: Any, caplog: pytest.LogCaptureFixture
) -> None:
    example = load_example("structured_logging")
    with caplog.at_level(logging.INFO, logger="soniq.hooks"):
        ids = await example.main()
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "soniq.hooks"]
    name = job_name(example.app, example.send_welcome_email)
    for job_id in ids:
        events = [r for r in records if r["job_id"] == job_id]
        assert [e["event"] for e in events] == ["job_started", "job_completed"]
        started, completed = events
        assert started == {"event": "job_started", "job_name": name, "job_id": job_id, "attempt": 1}
        assert completed["job_name"] == name
        assert isinstance(completed["duration_ms"], float) and completed["duration_ms"] >= 10.0
    assert len(records) == 4


async def test_prometheus_example_counts_starts_durations_and_failures(
    load_example: Any,
) -> None:
    example = load_example("prometheus_metrics")
    registry = prometheus_client.REGISTRY
    try:
        ids = await example.main()
        resize = job_name(example.app, example.resize_image)
        flaky = job_name(example.app, example.call_flaky_api)
        assert len(ids["resize_image"]) == 3
        sample = registry.get_sample_value
        assert sample("soniq_jobs_started_total", {"job_name": resize}) == 3.0
        assert sample("soniq_jobs_started_total", {"job_name": flaky}) == 2.0  # two attempts
        assert sample("soniq_jobs_failed_total", {"job_name": flaky}) == 2.0
        assert sample("soniq_jobs_failed_total", {"job_name": resize}) is None
        assert sample("soniq_jobs_duration_ms_count", {"job_name": resize}) == 3.0
        assert sample("soniq_jobs_duration_ms_count", {"job_name": flaky}) is None
        total_ms = sample("soniq_jobs_duration_ms_sum", {"job_name": resize})
        assert total_ms is not None and total_ms >= 30.0  # three jobs of >= 10 ms each
    finally:
        # The page's metrics live in the default registry; leave it as we found it.
        for collector in (example.jobs_started, example.jobs_completed, example.jobs_failed):
            registry.unregister(collector)


async def test_dead_letter_example_alerts_once_on_the_final_attempt(load_example: Any) -> None:
    example = load_example("dead_letter_alert")
    ids = await example.main()
    charge = job_name(example.app, example.charge_card)
    assert example.sent_messages == [
        f"Job {charge} ({ids['charge_card']}) moved to dead-letter queue: "
        f"card declined for order 42"
    ]
    async with Soniq(os.environ["SONIQ_DATABASE_URL"]) as app:
        charged = await app.get_job(ids["charge_card"])
        synced = await app.get_job(ids["sync_inventory"])
    assert charged is not None and synced is not None
    assert (charged["status"], charged["attempts"]) == ("dead_letter", 3)
    assert (synced["status"], synced["attempts"]) == ("done", 3)  # failed twice, no alert


@pytest.fixture
def span_exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK provider exporting to memory, handed to the example's ``trace.get_tracer`` call.

    The global provider can be set only once per process; leaving it alone keeps this test from
    deciding where other tests' spans go.
    """
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    yield exporter
    provider.shutdown()


async def test_opentelemetry_example_makes_one_span_per_attempt(
    load_example: Any, span_exporter: InMemorySpanExporter
) -> None:
    example = load_example("opentelemetry_tracing")
    ids = await example.main()
    render = job_name(example.app, example.render_invoice)
    notify = job_name(example.app, example.notify_accounting)
    spans = {
        s.attributes["job.id"]: s
        for s in span_exporter.get_finished_spans()
        if s.attributes is not None and s.attributes.get("job.id") in ids.values()
    }
    assert len(spans) == 2
    ok = spans[ids["render_invoice"]]
    assert ok.name == f"job:{render}"
    assert ok.attributes is not None and ok.attributes["job.attempt"] == 1
    assert ok.attributes["job.duration_ms"] >= 10.0
    assert ok.status.status_code is trace.StatusCode.UNSET
    failed = spans[ids["notify_accounting"]]
    assert failed.name == f"job:{notify}"
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.status.description == "accounting API rejected invoice 7"
    assert failed.attributes is not None and "job.duration_ms" not in failed.attributes
    assert ok.end_time is not None and failed.end_time is not None
    assert example._spans == {}  # every span was ended and dropped


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("structured_logging", '"job_completed", "job_name": "__main__.send_welcome_email"'),
        ("prometheus_metrics", 'soniq_jobs_started_total{job_name="__main__.resize_image"} 3.0'),
        ("dead_letter_alert", "[slack] Job __main__.charge_card ("),
        ("opentelemetry_tracing", '"name": "job:__main__.render_invoice"'),
    ],
    ids=["structured_logging", "prometheus_metrics", "dead_letter_alert", "opentelemetry"],
)
async def test_each_example_runs_as_a_script(clean_db: str, name: str, expected: str) -> None:
    env = {**os.environ, "SONIQ_DATABASE_URL": clean_db}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / f"{name}.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 90)
    text = output.decode()
    assert proc.returncode == 0, text
    assert expected in text, text
