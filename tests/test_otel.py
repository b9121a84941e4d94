"""Issue 4: tracing, checked span by span with the SDK's in-memory exporter."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from soniq import ConfigurationError, JobContext, Middleware, Soniq
from soniq.logs import FailureLogMiddleware
from soniq_otel import PREVIOUS_ATTEMPT_KEY, OtelConfig, TracingMiddleware, build_tracer_provider
from tests.support.waiting import running_worker, wait_status

_EXPORTER = InMemorySpanExporter()
_installed = False


def _install_global_exporter() -> None:
    """The tests share the process's global provider (user spans inside jobs use it); the
    in-memory exporter is attached to it once, whoever set it up."""
    global _installed
    if _installed:
        return
    current = trace.get_tracer_provider()
    if isinstance(current, SdkTracerProvider):
        current.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    else:
        provider = SdkTracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _installed = True


@pytest.fixture
def spans() -> InMemorySpanExporter:
    _install_global_exporter()
    _EXPORTER.clear()
    return _EXPORTER


@pytest.fixture
def traced(app: Soniq, spans: InMemorySpanExporter) -> Soniq:
    app.instrument(otel=True)
    return app


class Boom(Exception):
    pass


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    return sorted(found, key=lambda s: (s.attributes or {}).get("soniq.job.attempt", 0))


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def link_map(span: ReadableSpan) -> dict[str, tuple[int, int]]:
    """link type -> (trace id, span id)"""
    out = {}
    for link in span.links:
        kind = str((link.attributes or {})["soniq.link.type"])
        out[kind] = (link.context.trace_id, link.context.span_id)
    return out


def ids(span: ReadableSpan) -> tuple[int, int]:
    assert span.context is not None
    return span.context.trace_id, span.context.span_id


def exceptions(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == "exception"]


async def stored_trace_context(db: asyncpg.Connection, job_id: str) -> dict[str, str]:
    text = await db.fetchval("SELECT trace_context::text FROM soniq_jobs WHERE id = $1", job_id)
    return dict(json.loads(text)) if text else {}


# -- switch -----------------------------------------------------------------------------------


async def test_instrument_twice_adds_one_outermost_layer(app: Soniq) -> None:
    class UserLayer(Middleware):
        pass

    app.middleware.add(UserLayer())
    app.instrument(otel=True)
    first = next(iter(app.middleware))
    app.instrument(otel=True)
    assert [type(m) for m in app.middleware] == [TracingMiddleware, FailureLogMiddleware, UserLayer]
    assert next(iter(app.middleware)) is first  # nothing changed
    assert first.telemetry and first.order == 10

    # A different config replaces the layer's options, in place; True again keeps them.
    app.instrument(otel=OtelConfig(max_parent_age=5))
    app.instrument(otel=True)
    layers = list(app.middleware)
    assert [type(m) for m in layers] == [TracingMiddleware, FailureLogMiddleware, UserLayer]
    assert isinstance(layers[0], TracingMiddleware)
    assert layers[0].config == OtelConfig(max_parent_age=5)


async def test_config_object_or_dict(app: Soniq) -> None:
    app.instrument(otel={"max_parent_age": 7.5, "record_args": ["to"]})
    layer = next(iter(app.middleware))
    assert isinstance(layer, TracingMiddleware)
    assert layer.config.max_parent_age == 7.5
    with pytest.raises(TypeError, match="otel="):
        app.instrument(otel="yes")
    with pytest.raises(ConfigurationError, match="trace_parent"):
        OtelConfig(trace_parent="sibling")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_parent_age"):
        OtelConfig(max_parent_age=-1)
    with pytest.raises(ConfigurationError, match="record_args"):
        OtelConfig(record_args="to")


# -- producer spans ---------------------------------------------------------------------------


async def test_enqueue_is_a_producer_span_saved_with_the_job(
    traced: Soniq, spans: InMemorySpanExporter, db: asyncpg.Connection
) -> None:
    @traced.job(name="mail.send", queue="mail", priority=3)
    async def send(to: str) -> None:
        pass

    request = trace.get_tracer("test").start_span("POST /signup")
    with trace.use_span(request, end_on_exit=True):
        job_id = await traced.enqueue(send, to="a@example.com")

    span = one(spans, "send mail.send")
    assert span.kind is SpanKind.PRODUCER
    assert parent_id(span) == ids(request)[1]  # the enqueue belongs to the request's trace
    assert attrs(span) == {
        "messaging.system": "soniq",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "mail",
        "messaging.message.id": job_id,
        "soniq.job.name": "mail.send",
        "soniq.job.priority": 3,
    }
    stored = await stored_trace_context(db, job_id)
    trace_id, span_id = ids(span)
    version, tid, sid, flags = stored["traceparent"].split("-")
    assert (version, tid, sid) == ("00", f"{trace_id:032x}", f"{span_id:016x}")
    assert int(flags, 16) & 1  # sampled


async def test_batch_enqueue_is_one_span_with_the_count(
    traced: Soniq, spans: InMemorySpanExporter, db: asyncpg.Connection
) -> None:
    @traced.job(name="batch.item")
    async def item(n: int) -> int:
        return n

    job_ids = await traced.enqueue_many(item, [{"n": i} for i in range(3)])
    span = one(spans, "send batch.item")
    assert span.kind is SpanKind.PRODUCER
    assert attrs(span)["messaging.batch.message_count"] == 3
    assert "messaging.message.id" not in attrs(span)  # not one message
    contexts = [await stored_trace_context(db, j) for j in job_ids]
    assert all(c == contexts[0] for c in contexts) and contexts[0]["traceparent"]

    async with running_worker(traced):
        for j in job_ids:
            await wait_status(traced, j, "done")
    attempts = named(spans, "process batch.item")
    assert len(attempts) == 3
    assert {parent_id(a) for a in attempts} == {ids(span)[1]}
    assert {attrs(a)["messaging.message.id"] for a in attempts} == set(job_ids)


async def test_failed_enqueue_span_records_the_error(
    empty_database_url: str, spans: InMemorySpanExporter
) -> None:
    async with Soniq(empty_database_url) as app:  # no schema: the insert fails
        app.instrument(otel=True)

        @app.job(name="nowhere")
        async def nowhere() -> None:
            pass

        with pytest.raises(Exception, match="soniq setup"):
            await app.enqueue(nowhere)
    span = one(spans, "send nowhere")
    assert span.status.status_code is StatusCode.ERROR
    assert len(exceptions(span)) == 1
    assert attrs(span)["error.type"] == "soniq.errors.SchemaError"


# -- attempt spans ----------------------------------------------------------------------------


async def test_attempt_is_a_consumer_span_child_of_the_enqueue(
    traced: Soniq, spans: InMemorySpanExporter
) -> None:
    seen: dict[str, Any] = {}
    tracer = trace.get_tracer("user-code")

    @traced.before_job
    def hook(job_name: str, job_id: str, attempt: int) -> None:
        seen["hook"] = trace.get_current_span().get_span_context().span_id

    @traced.job(name="emails.send", queue="emails", max_retries=4, priority=2)
    async def send_email(to: str) -> str:
        seen["tenant"] = baggage.get_baggage("tenant")
        with tracer.start_as_current_span("render template"):
            await asyncio.sleep(0)
        return "ok"

    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        job_id = await traced.enqueue(send_email, to="secret@example.com")
    finally:
        otel_context.detach(token)
    async with running_worker(traced) as worker:
        await wait_status(traced, job_id, "done")

    send = one(spans, "send emails.send")
    attempt = one(spans, "process emails.send")
    assert attempt.kind is SpanKind.CONSUMER
    assert ids(attempt)[0] == ids(send)[0]
    assert parent_id(attempt) == ids(send)[1]
    assert link_map(attempt) == {"enqueue": ids(send)}
    a = attrs(attempt)
    wait = a.pop("soniq.job.queue_wait_seconds")
    assert isinstance(wait, float) and 0 <= wait < 30
    assert a == {
        "messaging.system": "soniq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": "emails",
        "messaging.message.id": job_id,
        "messaging.client.id": worker.id,
        "soniq.job.name": "emails.send",
        "soniq.job.attempt": 1,
        "soniq.job.max_attempts": 5,
        "soniq.job.priority": 2,
        "soniq.job.outcome": "done",
    }
    assert attempt.status.status_code is StatusCode.UNSET
    assert not attempt.events
    # Hooks and the job run inside the attempt span; the user's span is its child.
    assert seen["hook"] == ids(attempt)[1]
    assert parent_id(one(spans, "render template")) == ids(attempt)[1]
    assert seen["tenant"] == "acme"  # baggage travels with the job


async def test_user_span_in_a_plain_def_job_thread_is_a_child(
    traced: Soniq, spans: InMemorySpanExporter
) -> None:
    threads: list[str] = []

    @traced.job(name="sync.work")
    def work() -> None:
        threads.append(threading.current_thread().name)
        with trace.get_tracer("user-code").start_as_current_span("blocking io"):
            pass

    job_id = await traced.enqueue(work)
    async with running_worker(traced):
        await wait_status(traced, job_id, "done")
    assert threads and threads[0].startswith("soniq-job")
    assert parent_id(one(spans, "blocking io")) == ids(one(spans, "process sync.work"))[1]


async def test_retries_are_siblings_each_linked_to_the_one_before(
    traced: Soniq, spans: InMemorySpanExporter, db: asyncpg.Connection
) -> None:
    runs: list[int] = []

    @traced.job(name="flaky", max_retries=3, retry_backoff=0.01)
    async def flaky() -> str:
        runs.append(1)
        if len(runs) < 3:
            raise Boom(f"failure {len(runs)}")
        return "third time lucky"

    job_id = await traced.enqueue(flaky)
    async with running_worker(traced):
        await wait_status(traced, job_id, "done")

    send = one(spans, "send flaky")
    first, second, third = named(spans, "process flaky")
    for attempt in (first, second, third):
        # Siblings under the enqueue, never nested in each other.
        assert ids(attempt)[0] == ids(send)[0]
        assert parent_id(attempt) == ids(send)[1]
    assert link_map(first) == {"enqueue": ids(send)}
    assert link_map(second) == {"enqueue": ids(send), "previous_attempt": ids(first)}
    assert link_map(third) == {"enqueue": ids(send), "previous_attempt": ids(second)}

    for n, attempt in ((1, first), (2, second)):
        a = attrs(attempt)
        assert a["soniq.job.attempt"] == n
        assert a["soniq.job.outcome"] == "retry"
        assert a["error.type"] == "tests.test_otel.Boom"
        next_at = datetime.fromisoformat(str(a["soniq.job.next_attempt_at"]))
        assert attempt.start_time is not None
        assert next_at.timestamp() * 1e9 > attempt.start_time
        assert 0 <= float(a["soniq.job.retry_delay_seconds"]) <= 0.01
        assert attempt.status.status_code is StatusCode.ERROR
        assert attempt.status.description == f"Boom: failure {n}"
        [exc] = exceptions(attempt)  # exactly one
        assert exc["exception.type"] == "tests.test_otel.Boom"
        assert exc["exception.message"] == f"failure {n}"
        assert not [e for e in attempt.events if e.name == "soniq.job.dead_letter"]
    assert attrs(third)["soniq.job.outcome"] == "done"
    assert third.status.status_code is StatusCode.UNSET
    stored = await stored_trace_context(db, job_id)
    assert stored[PREVIOUS_ATTEMPT_KEY].split("-")[2] == f"{ids(second)[1]:016x}"


async def test_dead_letter_then_revived_job_links_without_parent(
    traced: Soniq, spans: InMemorySpanExporter
) -> None:
    failing = {"on": True}

    @traced.job(name="doomed", max_retries=1, retry_backoff=0.01)
    async def doomed() -> None:
        if failing["on"]:
            raise Boom("still broken")

    job_id = await traced.enqueue(doomed)
    async with running_worker(traced):
        await wait_status(traced, job_id, "dead_letter")
        send = one(spans, "send doomed")
        first, last = named(spans, "process doomed")
        assert attrs(first)["soniq.job.outcome"] == "retry"
        assert attrs(last)["soniq.job.outcome"] == "dead_letter"
        assert "soniq.job.next_attempt_at" not in attrs(last)
        assert last.status.status_code is StatusCode.ERROR
        assert len(exceptions(last)) == 1
        [event] = [e for e in last.events if e.name == "soniq.job.dead_letter"]
        assert dict(event.attributes or {}) == {
            "soniq.job.attempt": 2,
            "error.type": "tests.test_otel.Boom",
        }

        failing["on"] = False
        assert await traced.retry_dead_letter(job_id)
        await wait_status(traced, job_id, "done")

    revived = [s for s in named(spans, "process doomed") if attrs(s).get("soniq.job.revived")]
    assert len(revived) == 1
    span = revived[0]
    assert attrs(span)["soniq.job.attempt"] == 1
    assert span.parent is None  # its own trace: the request may be long gone
    assert ids(span)[0] != ids(send)[0]
    assert link_map(span) == {"enqueue": ids(send), "previous_attempt": ids(last)}


async def test_job_older_than_max_age_is_linked_not_parented(
    traced: Soniq, spans: InMemorySpanExporter, db: asyncpg.Connection
) -> None:
    @traced.job(name="late")
    async def late() -> None:
        pass

    job_id = await traced.enqueue(late)
    # As if it had been waiting two hours (a backlog, or a worker outage).
    await db.execute(
        "UPDATE soniq_jobs SET created_at = created_at - interval '2 hours', "
        "scheduled_at = scheduled_at - interval '2 hours' WHERE id = $1",
        job_id,
    )
    async with running_worker(traced):
        await wait_status(traced, job_id, "done")
    send = one(spans, "send late")
    span = one(spans, "process late")
    assert span.parent is None
    assert ids(span)[0] != ids(send)[0]
    assert link_map(span) == {"enqueue": ids(send)}
    assert attrs(span)["soniq.job.queue_wait_seconds"] >= 7200


async def test_max_age_is_configurable_and_counts_from_the_enqueue(
    app: Soniq, spans: InMemorySpanExporter, db: asyncpg.Connection
) -> None:
    app.instrument(otel=OtelConfig(max_parent_age=3 * 3600))

    @app.job(name="scheduled")
    async def scheduled() -> None:
        pass

    young = await app.enqueue(scheduled)
    old = await app.enqueue(scheduled)
    # Both waited two hours in the queue; "old" was enqueued four hours ago for later.
    await db.execute(
        "UPDATE soniq_jobs SET created_at = created_at - interval '2 hours', "
        "scheduled_at = scheduled_at - interval '2 hours' WHERE id = $1",
        young,
    )
    await db.execute(
        "UPDATE soniq_jobs SET created_at = created_at - interval '4 hours', "
        "scheduled_at = scheduled_at - interval '2 hours' WHERE id = $1",
        old,
    )
    async with running_worker(app):
        await wait_status(app, young, "done")
        await wait_status(app, old, "done")
    by_job = {attrs(s)["messaging.message.id"]: s for s in named(spans, "process scheduled")}
    assert by_job[young].parent is not None
    assert by_job[old].parent is None
    assert len(by_job[old].links) == 1


@pytest.mark.parametrize("default", ["child", "link"])
async def test_trace_parent_per_job_overrides_the_default(
    app: Soniq, spans: InMemorySpanExporter, default: str
) -> None:
    app.instrument(otel=OtelConfig(trace_parent=default))  # type: ignore[arg-type]

    @app.job(name="as.default")
    async def as_default() -> None:
        pass

    @app.job(name="as.child", trace_parent="child")
    async def as_child() -> None:
        pass

    @app.job(name="as.link", trace_parent="link")
    async def as_link() -> None:
        pass

    @app.job(name="as.none", trace_parent="none")
    async def as_none() -> None:
        pass

    job_ids = [await app.enqueue(f) for f in (as_default, as_child, as_link, as_none)]
    async with running_worker(app):
        for j in job_ids:
            await wait_status(app, j, "done")

    def relation(name: str) -> tuple[bool, set[str]]:
        send, attempt = one(spans, f"send {name}"), one(spans, f"process {name}")
        is_child = parent_id(attempt) == ids(send)[1] and ids(attempt)[0] == ids(send)[0]
        return is_child, set(link_map(attempt))

    assert relation("as.default") == (
        (True, {"enqueue"}) if default == "child" else (False, {"enqueue"})
    )
    assert relation("as.child") == (True, {"enqueue"})
    assert relation("as.link") == (False, {"enqueue"})
    assert relation("as.none") == (False, set())
    assert one(spans, "process as.none").parent is None


async def test_timeout_is_recorded_as_a_timeout(traced: Soniq, spans: InMemorySpanExporter) -> None:
    @traced.job(name="slow", timeout=0.05, max_retries=0)
    async def slow() -> None:
        await asyncio.sleep(30)

    job_id = await traced.enqueue(slow)
    async with running_worker(traced):
        await wait_status(traced, job_id, "dead_letter")
    span = one(spans, "process slow")
    a = attrs(span)
    assert a["error.type"] == "timeout"
    assert a["soniq.job.timeout_seconds"] == 0.05
    assert a["soniq.job.outcome"] == "dead_letter"
    [exc] = exceptions(span)
    assert exc["exception.type"] == "soniq.errors.JobTimeout"
    assert span.status.status_code is StatusCode.ERROR
    assert "timed out" in (span.status.description or "")


async def test_arguments_are_attributes_only_when_asked(
    app: Soniq, spans: InMemorySpanExporter
) -> None:
    @app.job(name="with.args")
    async def with_args(to: str, body: str, tags: list[str]) -> None:
        pass

    app.instrument(otel=True)
    quiet = await app.enqueue(with_args, to="a@b.c", body="private", tags=["x"])
    async with running_worker(app):
        await wait_status(app, quiet, "done")
    for span in spans.get_finished_spans():
        assert not [k for k in attrs(span) if "args" in k]
        assert "private" not in json.dumps(attrs(span))

    app.instrument(otel=OtelConfig(record_args=["to", "tags"]))
    spans.clear()
    loud = await app.enqueue(with_args, to="a@b.c", body="private", tags=["x"])
    async with running_worker(app):
        await wait_status(app, loud, "done")
    for name in ("send with.args", "process with.args"):
        a = attrs(one(spans, name))
        assert a["soniq.job.args.to"] == "a@b.c"
        assert a["soniq.job.args.tags"] == '["x"]'
        assert "soniq.job.args.body" not in a


async def test_log_records_of_an_attempt_carry_its_span(
    traced: Soniq, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="soniq.jobs")  # job.started is DEBUG
    traced.instrument(logs=True)  # behind tracing: order 10, then 20
    # 22: every app's default failure log, which steps aside beside the log layer.
    assert [m.order for m in traced.middleware] == [10, 20, 22]

    @traced.job(name="logged", max_retries=1, retry_backoff=0.01)
    async def logged(ctx: JobContext) -> None:
        if ctx.attempt == 1:
            raise Boom("once")

    job_id = await traced.enqueue(logged)
    async with running_worker(traced):
        await wait_status(traced, job_id, "done")
    by_attempt = {attrs(s)["soniq.job.attempt"]: s for s in named(spans, "process logged")}
    records = [r for r in caplog.records if r.__dict__.get("job_id") == job_id]
    assert {r.__dict__["event"] for r in records} == {"job.started", "job.retry", "job.done"}
    for record in records:
        trace_id, span_id = ids(by_attempt[record.__dict__["attempt"]])
        assert record.__dict__["trace_id"] == f"{trace_id:032x}"
        assert record.__dict__["span_id"] == f"{span_id:016x}"


# -- never in the way -------------------------------------------------------------------------


class FailingExporter(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionRefusedError("collector is down")


class BlockedExporter(SpanExporter):
    """A collector that accepts the connection and never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        self.release.wait(60)
        return SpanExportResult.SUCCESS


class RaisingProcessor(SpanProcessor):
    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("processor bug")


async def test_failing_exporter_or_processor_never_fails_a_job(app: Soniq) -> None:
    provider = SdkTracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(FailingExporter()))
    provider.add_span_processor(RaisingProcessor())
    app.instrument(otel=OtelConfig(tracer_provider=provider))
    reported: list[BaseException] = []
    app.middleware.telemetry_error_listeners.append(lambda _mw, exc: reported.append(exc))

    @app.job(name="fine")
    async def fine() -> int:
        return 42

    @app.job(name="bad", max_retries=0)
    async def bad() -> None:
        raise Boom("job's own error")

    fine_id = await app.enqueue(fine)
    bad_id = await app.enqueue(bad)
    async with running_worker(app):
        done = await wait_status(app, fine_id, "done")
        dead = await wait_status(app, bad_id, "dead_letter")
    assert done["result"] == 42
    assert dead["last_error"] == "Boom: job's own error"  # the job's error, not ours
    assert reported and all(str(e) == "processor bug" for e in reported)


async def test_stuck_exporter_delays_neither_jobs_nor_shutdown(app: Soniq) -> None:
    exporter = BlockedExporter()
    provider = SdkTracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1))
    app.instrument(otel=OtelConfig(tracer_provider=provider, flush_timeout=0.3))

    @app.job(name="quick")
    async def quick(n: int) -> int:
        return n

    try:
        job_ids = await app.enqueue_many(quick, [{"n": i} for i in range(20)])
        worker = app.worker(install_signal_handlers=False)
        task = asyncio.create_task(worker.run())
        for j in job_ids:
            await wait_status(app, j, "done")
        assert exporter.calls >= 1  # the exporter really is stuck on a batch
        started = time.monotonic()
        worker.stop()
        await asyncio.wait_for(task, 30)
        # The 0.3 s flush bound plus the worker's own shutdown; a waited-for export is 60 s.
        assert time.monotonic() - started < 10
    finally:
        exporter.release.set()
        provider.shutdown()


async def test_spans_are_flushed_when_the_worker_stops(app: Soniq) -> None:
    exporter = InMemorySpanExporter()
    provider = SdkTracerProvider(shutdown_on_exit=False)
    # Nothing would be exported for a minute but for the flush at shutdown.
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    app.instrument(otel=OtelConfig(tracer_provider=provider))

    @app.job(name="buffered")
    async def buffered() -> None:
        pass

    job_id = await app.enqueue(buffered)
    async with running_worker(app):
        await wait_status(app, job_id, "done")
        assert exporter.get_finished_spans() == ()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["process buffered", "send buffered"]
    provider.shutdown()


async def test_unsampled_trace_still_links_retries(app: Soniq, db: asyncpg.Connection) -> None:
    exporter = InMemorySpanExporter()
    provider = SdkTracerProvider(sampler=ALWAYS_OFF, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.instrument(otel=OtelConfig(tracer_provider=provider))

    @app.job(name="unsampled", max_retries=1, retry_backoff=0.01)
    async def unsampled() -> None:
        raise Boom("x")

    job_id = await app.enqueue(unsampled)
    async with running_worker(app):
        await wait_status(app, job_id, "dead_letter")
    assert exporter.get_finished_spans() == ()
    stored = await stored_trace_context(db, job_id)
    # The context still travels, marked not sampled, so the decision holds down the line.
    for traceparent in (stored["traceparent"], stored[PREVIOUS_ATTEMPT_KEY]):
        assert not int(traceparent.split("-")[3], 16) & 1


# -- provider built from OTEL_* ---------------------------------------------------------------


def test_provider_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-worker")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    provider = build_tracer_provider()
    assert isinstance(provider, SdkTracerProvider)
    assert provider.resource.attributes["service.name"] == "billing-worker"
    assert "0.25" in provider.sampler.get_description()

    monkeypatch.delenv("OTEL_SERVICE_NAME")
    provider = build_tracer_provider(service_name="soniq-test")
    assert isinstance(provider, SdkTracerProvider)
    assert provider.resource.attributes["service.name"] == "soniq-test"

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not isinstance(build_tracer_provider(), SdkTracerProvider)


def test_unsupported_exporter_settings_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ConfigurationError, match="http/json"):
        build_tracer_provider()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigurationError, match="zipkin"):
        build_tracer_provider()
