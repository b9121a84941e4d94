"""soniq_prom in the test's own process: the layer in the chain, what each family counts, bounded
labels, exemplars, telemetry errors, buckets, and the render/ASGI entry points."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from soniq import AttemptContext, CallNext, FunctionMiddleware, Middleware, Soniq
from soniq.logs import FailureLogMiddleware, LogConfig, LogMiddleware
from soniq_otel import TracingMiddleware
from soniq_prom import (
    OVERFLOW_LABEL,
    PrometheusConfig,
    PrometheusMetrics,
    asgi_app,
    metrics_of,
    render,
    render_async,
)
from tests.support.waiting import running_worker, wait_until
from tests.test_prom_support import OPENMETRICS, current_trace_id, samples, tracing, value

FAMILIES = {
    "soniq_jobs_enqueued": ("counter", ("queue", "job_name")),
    "soniq_job_attempts": ("counter", ("queue", "job_name", "outcome")),
    "soniq_job_duration_seconds": ("histogram", ("queue", "job_name")),
    "soniq_job_queue_wait_seconds": ("histogram", ("queue", "job_name")),
    "soniq_jobs_in_progress": ("gauge", ("queue", "job_name")),
    "soniq_worker_capacity": ("gauge", ()),
    "soniq_telemetry_errors": ("counter", ()),
    "soniq_queue_jobs": ("gauge", ("queue", "state")),
    "soniq_queue_oldest_ready_age_seconds": ("gauge", ("queue",)),
    "soniq_workers_live": ("gauge", ()),
    "soniq_schedule_fires": ("counter", ("schedule", "result")),
    "soniq_schedule_last_fire_timestamp_seconds": ("gauge", ("schedule",)),
    "soniq_schedule_next_fire_timestamp_seconds": ("gauge", ("schedule",)),
    "soniq_jobs_deduplicated": ("counter", ("queue", "job_name")),
    "soniq_queue_paused": ("gauge", ("queue",)),
    "soniq_queue_concurrency_limit": ("gauge", ("queue",)),
}


@pytest.fixture
async def metrics_app(app: Soniq) -> AsyncIterator[Soniq]:
    """The `app` fixture; at the end its metrics layer gives up the queue-state role, which
    otherwise outlives the app on its own connection (there is no worker to shut it down)."""
    yield app
    layer = metrics_of(app)
    if layer is not None:
        await layer.close()


async def _all_finished(app: Soniq, ids: list[str]) -> bool:
    for job_id in ids:
        job = await app.get_job(job_id)
        if job is None or job["status"] not in ("done", "dead_letter"):
            return False
    return True


async def _run(app: Soniq, ids: list[str], **options: Any) -> None:
    async with running_worker(app, **options):
        await wait_until(lambda: _all_finished(app, ids), timeout=20, what="jobs to finish")


async def test_instrument_adds_one_metrics_layer_in_telemetry_order(metrics_app: Soniq) -> None:
    app = metrics_app

    @app.middleware
    async def user_layer(ctx: AttemptContext, call_next: CallNext) -> Any:
        return await call_next(ctx)

    app.instrument(prometheus=True)
    first = metrics_of(app)
    app.instrument(prometheus=True)  # again: nothing changes
    app.instrument(prometheus=PrometheusConfig())  # the same config: nothing changes
    # (no context filter on the test runner's own log handlers)
    app.instrument(otel=tracing(), logs=LogConfig(attach_context_filter=False))
    assert [type(layer) for layer in app.middleware] == [
        TracingMiddleware,
        LogMiddleware,
        FailureLogMiddleware,  # every app's; steps aside while LogMiddleware is there
        PrometheusMetrics,
        FunctionMiddleware,
    ]
    assert metrics_of(app) is first
    assert first is not None
    listeners = app.middleware.telemetry_error_listeners
    assert listeners == [first.count_telemetry_error]

    # A different config replaces the layer in place, registry and listener included.
    app.instrument(prometheus=PrometheusConfig(max_queues=3))
    second = metrics_of(app)
    assert second is not None and second is not first and second.config.max_queues == 3
    assert list(app.middleware)[3] is second
    assert listeners == [second.count_telemetry_error]
    assert not list(first.registry.collect()), "the old layer's metrics are unregistered"
    async with running_worker(app):
        with pytest.raises(RuntimeError, match="running worker"):
            app.instrument(prometheus=PrometheusConfig(max_queues=4))
    assert metrics_of(app) is second


async def test_every_family_has_its_documented_name_type_labels_and_help(
    metrics_app: Soniq,
) -> None:
    app = metrics_app

    @app.job(name="j")
    async def j() -> None:
        pass

    app.instrument(prometheus=True)
    ids = [await app.enqueue("j")]
    await _run(app, ids)
    text = (await render_async(app)).body.decode()
    families = {
        f.name: f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")
    }
    assert set(families) == set(FAMILIES)
    for name, (kind, labels) in FAMILIES.items():
        family = families[name]
        assert family.type == kind, name
        assert len(family.documentation) > 20, f"{name} needs HELP text"
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == set(labels), (name, sample)
            if kind == "counter":
                assert sample.name == name + "_total"
    openmetrics = (await render_async(app, openmetrics=True)).body.decode()
    units = {f.name: f.unit for f in openmetrics_families(openmetrics)}
    assert units["soniq_job_duration_seconds"] == "seconds"
    assert units["soniq_job_queue_wait_seconds"] == "seconds"
    assert units["soniq_queue_oldest_ready_age_seconds"] == "seconds"


async def test_in_progress_capacity_and_queue_wait_on_the_database_clock(
    metrics_app: Soniq,
) -> None:
    app = metrics_app
    started = asyncio.Event()
    release = asyncio.Event()

    @app.job(name="held")
    async def held() -> None:
        started.set()
        await release.wait()

    @app.job(name="quick")
    async def quick() -> None:
        pass

    app.instrument(prometheus=True)
    ids = [
        await app.enqueue("quick", scheduled_at=-30),  # due 30 s ago: it has waited 30 s
        await app.enqueue("quick", scheduled_at=1.0),  # a delay is not waiting
        await app.enqueue("held"),
    ]
    async with running_worker(app, concurrency=3):
        await wait_until(started.is_set, what="the held job to start")
        found = samples((await render_async(app)).body.decode())
        assert value(found, "soniq_jobs_in_progress", job_name="held") == 1
        assert value(found, "soniq_jobs_in_progress") == 1
        assert value(found, "soniq_worker_capacity") == 3
        release.set()
        await wait_until(lambda: _all_finished(app, ids), timeout=20, what="jobs to finish")
    found = samples(render(app).body.decode())
    assert value(found, "soniq_jobs_in_progress") == 0
    assert value(found, "soniq_worker_capacity") == 0
    wait = "soniq_job_queue_wait_seconds"
    assert value(found, f"{wait}_count", job_name="quick") == 2
    assert value(found, f"{wait}_sum", job_name="quick") >= 30
    assert value(found, f"{wait}_bucket", job_name="quick", le="1.0") == 1  # the delayed one
    assert value(found, f"{wait}_bucket", job_name="quick", le="30.0") == 1
    assert value(found, f"{wait}_bucket", job_name="quick", le="60.0") == 2
    assert value(found, "soniq_job_duration_seconds_count", job_name="held") == 1
    assert value(found, "soniq_job_duration_seconds_sum", job_name="held") > 0


async def test_enqueues_are_counted_once_written_singly_and_in_batches(
    metrics_app: Soniq, clean_db: str
) -> None:
    app = metrics_app

    @app.job(name="e", queue="mail")
    async def e() -> None:
        pass

    app.instrument(prometheus=True)
    await app.enqueue("e")
    await app.enqueue("e", queue="urgent")
    await app.enqueue_many("e", [{}, {}, {}])
    closed = await asyncpg.connect(clean_db)
    await closed.close()
    with pytest.raises(asyncpg.InterfaceError):
        await app.enqueue("e", connection=closed)  # never written, never counted
    found = samples(render(app).body.decode())
    assert value(found, "soniq_jobs_enqueued_total", queue="mail", job_name="e") == 4
    assert value(found, "soniq_jobs_enqueued_total", queue="urgent", job_name="e") == 1
    assert value(found, "soniq_jobs_enqueued_total") == 5


async def test_queue_labels_past_the_cap_fall_into_one_overflow_value(metrics_app: Soniq) -> None:
    app = metrics_app

    @app.job(name="t")
    async def t() -> None:
        pass

    app.instrument(prometheus=PrometheusConfig(max_queues=2))
    ids = [await app.enqueue("t", queue=f"tenant-{i}") for i in range(6)]
    await _run(app, ids, queues=[f"tenant-{i}" for i in range(6)])
    found = samples(render(app).body.decode())
    enqueued = {s.labels["queue"]: s.value for s in found if s.name == "soniq_jobs_enqueued_total"}
    assert enqueued == {"tenant-0": 1, "tenant-1": 1, OVERFLOW_LABEL: 4}
    done = [s for s in found if s.name == "soniq_job_attempts_total" and s.value]
    assert {s.labels["queue"] for s in done} == {"tenant-0", "tenant-1", OVERFLOW_LABEL}
    assert sum(s.value for s in done) == 6  # totals stay exact
    assert {k for s in found for k in s.labels} <= {"queue", "job_name", "outcome", "state", "le"}


async def test_job_names_past_the_cap_or_unregistered_fall_into_overflow(
    metrics_app: Soniq,
) -> None:
    app = metrics_app
    for name in ("j1", "j2", "j3"):

        async def job() -> None:
            pass

        app.job(name=name)(job)
    app.instrument(prometheus=PrometheusConfig(max_job_names=2))
    ids = [await app.enqueue(name) for name in ("j1", "j2", "j3", "j3")]
    await _run(app, ids)
    # An attempt of a job this app does not know (another app's job) is not a new label.
    layer = metrics_of(app)
    assert layer is not None
    spec = app.registry.spec("j1")
    ghost = AttemptContext(
        job_id="00000000-0000-0000-0000-000000000000",
        job_name="ghost-job",
        queue="default",
        attempt=1,
        max_attempts=1,
        priority=0,
        args={},
        enqueued_at=_now(),
        scheduled_at=_now(),
        queue_wait_s=0.0,
        worker_id="w",
        spec=spec,
    )

    async def finish(ctx: AttemptContext) -> None:
        ctx.settle_success(None)

    await layer(ghost, finish)
    found = samples(render(app).body.decode())
    done = {
        s.labels["job_name"]: s.value
        for s in found
        if s.name == "soniq_job_attempts_total" and s.labels["outcome"] == "done"
    }
    # j1 and j2 were seeded first (registration order) when the worker started.
    assert done == {"j1": 1, "j2": 1, OVERFLOW_LABEL: 3}


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


async def test_exemplars_carry_the_trace_id_of_the_attempt_span(metrics_app: Soniq) -> None:
    app = metrics_app
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))

    @app.job(name="traced")
    async def traced() -> str | None:
        return current_trace_id()

    app.instrument(otel=tracing(provider), prometheus=True)
    ids = [await app.enqueue("traced") for _ in range(3)]
    await _run(app, ids)
    process = {
        format(span.context.trace_id, "032x"): format(span.context.span_id, "016x")
        for span in spans.get_finished_spans()
        if span.name == "process traced"
    }
    assert len(process) == 3
    for job_id in ids:  # the job ran inside that span
        job = await app.get_job(job_id)
        assert job is not None and job["result"] in process

    exposition = render(app, OPENMETRICS)
    assert exposition.content_type.startswith("application/openmetrics-text")
    found = samples(exposition.body.decode(), openmetrics=True)
    for family in ("soniq_job_duration_seconds", "soniq_job_queue_wait_seconds"):
        exemplars = [
            s.exemplar for s in found if s.name == f"{family}_bucket" and s.exemplar is not None
        ]
        assert exemplars, family
        for exemplar in exemplars:
            assert process[exemplar.labels["trace_id"]] == exemplar.labels["span_id"]
    plain = render(app)
    assert plain.content_type.startswith("text/plain")
    assert b"trace_id" not in plain.body


@pytest.mark.parametrize("sampler", [None, ALWAYS_OFF], ids=["no tracing", "unsampled"])
async def test_no_exemplar_without_a_sampled_span(
    metrics_app: Soniq, sampler: Sampler | None
) -> None:
    app = metrics_app

    @app.job(name="plain")
    async def plain() -> None:
        pass

    if sampler is not None:
        app.instrument(otel=tracing(TracerProvider(sampler=sampler)))
    app.instrument(prometheus=True)
    await _run(app, [await app.enqueue("plain")])
    found = samples(render(app, openmetrics=True).body.decode(), openmetrics=True)
    assert value(found, "soniq_job_duration_seconds_count") == 1
    assert not [s for s in found if s.exemplar is not None]


async def test_telemetry_errors_are_counted_and_never_fail_the_job(metrics_app: Soniq) -> None:
    app = metrics_app

    class BrokenTelemetry(Middleware):
        telemetry = True
        order = 20

        async def before_job(self, ctx: AttemptContext) -> None:
            raise RuntimeError("exporter down")

    @app.job(name="fine")
    async def fine() -> int:
        return 7

    app.middleware.add_builtin(BrokenTelemetry())
    app.instrument(prometheus=True)
    ids = [await app.enqueue("fine") for _ in range(2)]
    await _run(app, ids)
    found = samples(render(app).body.decode())
    assert value(found, "soniq_telemetry_errors_total") == 2
    assert value(found, "soniq_job_attempts_total", outcome="done") == 2


async def test_buckets_can_be_overridden(metrics_app: Soniq) -> None:
    app = metrics_app

    @app.job(name="b")
    async def b() -> None:
        pass

    app.instrument(prometheus={"duration_buckets": [0.5, 2], "queue_wait_buckets": [60]})
    await _run(app, [await app.enqueue("b")])
    found = samples(render(app).body.decode())
    duration = {s.labels["le"] for s in found if s.name == "soniq_job_duration_seconds_bucket"}
    wait = {s.labels["le"] for s in found if s.name == "soniq_job_queue_wait_seconds_bucket"}
    assert duration == {"0.5", "2.0", "+Inf"}
    assert wait == {"60.0", "+Inf"}


def test_invalid_configuration_is_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="duration_buckets"):
        PrometheusConfig(duration_buckets=(1.0, 0.5))
    with pytest.raises(ValueError, match="max_job_names"):
        PrometheusConfig(max_job_names=0)
    with pytest.raises(TypeError, match="bucket"):
        PrometheusConfig.of({"bucket": [1]})


async def test_asgi_app_serves_both_formats_and_refuses_other_methods(
    metrics_app: Soniq,
) -> None:
    app = metrics_app

    @app.job(name="web")
    async def web() -> None:
        pass

    endpoint = asgi_app(app)  # before instrument: looked up per request
    app.instrument(prometheus=True)
    await app.enqueue("web")
    transport = httpx.ASGITransport(app=endpoint)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        plain = await client.get("/metrics")
        openmetrics = await client.get("/metrics", headers={"Accept": OPENMETRICS})
        posted = await client.post("/metrics")
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/plain")
    found = samples(plain.text)
    assert value(found, "soniq_jobs_enqueued_total", job_name="web") == 1
    # No worker here: the web process reports the queue state (it is the only candidate).
    assert value(found, "soniq_queue_jobs", queue="default", state="ready") == 1
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    assert posted.status_code == 405


async def test_render_names_the_fix_when_metrics_are_not_installed(app: Soniq) -> None:
    with pytest.raises(LookupError, match=r"instrument\(prometheus=True\)"):
        render(app)


def test_a_buckets_exemplar_is_replaced_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scrape shows one exemplar a bucket; replacing it on every sampled attempt only cost
    work. Within EXEMPLAR_EVERY the first stays; after it, the next observation takes over."""
    from opentelemetry.trace import SpanContext, TraceFlags

    from soniq_prom import families
    from soniq_prom.config import PrometheusConfig

    def span(n: int) -> SpanContext:
        return SpanContext(n, n, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))

    series = families.LocalFamilies(PrometheusConfig()).series("default", "job")
    series.begin(0.001, span(1))
    series.end("done", 0.001, span(1))
    series.begin(0.001, span(2))
    series.end("done", 0.001, span(2))
    held = [e for e in series.duration.exemplars + series.queue_wait.exemplars if e is not None]
    assert [e[0].trace_id for e in held] == [1, 1]

    monkeypatch.setattr(families, "EXEMPLAR_EVERY", 0.0)
    series.begin(0.001, span(3))
    series.end("done", 0.001, span(3))
    held = [e for e in series.duration.exemplars + series.queue_wait.exemplars if e is not None]
    assert [e[0].trace_id for e in held] == [3, 3]
    # Every observation is counted, whichever exemplar a bucket holds.
    assert sum(series.duration.counts) == sum(series.queue_wait.counts) == 3
