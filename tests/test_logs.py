"""Structured logs: the records a real worker run produces, their fields and formats, and that
they link to the attempt's span and leak neither job arguments nor database secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Tracer

from soniq import AttemptContext, CallNext, Middleware, Soniq
from soniq.database import mask_url
from soniq.logs import JobContextFilter, JsonFormatter, LogConfig, LogMiddleware, TextFormatter
from tests.support.waiting import running_worker, wait_status, wait_until

JOB_FIELDS = (
    "job_id",
    "job_name",
    "queue",
    "attempt",
    "max_attempts",
    "queue_wait_ms",
    "worker_id",
)
user_log = logging.getLogger("tests.logs.user")


class Capture(logging.Handler):
    """Keeps every record, with the context filter on, as a user's own handler would."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(JobContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "event", None) == name]

    def one(self, name: str) -> logging.LogRecord:
        found = self.events(name)
        assert len(found) == 1, f"expected one {name} record, got {len(found)}"
        return found[0]

    def messages(self, text: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == text]


@pytest.fixture
def captured() -> Iterator[Capture]:
    root = logging.getLogger()
    handler = Capture()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def started_too() -> Iterator[None]:
    """``job.started`` is DEBUG: the ``soniq.jobs`` logger at DEBUG lets it through."""
    jobs = logging.getLogger("soniq.jobs")
    level = jobs.level
    jobs.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        jobs.setLevel(level)


class SpanLayer(Middleware):
    """A tracing layer where soniq_otel's goes (order 10): the attempt's span is current
    inside every layer behind it."""

    telemetry = True
    order = 10

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    async def __call__(self, ctx: AttemptContext, call_next: CallNext) -> Any:
        name = f"process {ctx.job_name}"
        with self.tracer.start_as_current_span(name, kind=SpanKind.CONSUMER) as span:
            span.set_attribute("soniq.job_id", ctx.job_id)
            return await call_next(ctx)


@pytest.fixture
def spans() -> Iterator[tuple[Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("tests.logs"), exporter
    provider.shutdown()


def span_of(exporter: InMemorySpanExporter, job_id: str) -> ReadableSpan:
    found = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("soniq.job_id") == job_id
    ]
    assert len(found) == 1
    return found[0]


def ids_of(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data: dict[str, Any] = json.loads(line)
    stamp = datetime.fromisoformat(data["timestamp"])
    assert stamp.utcoffset() == timedelta(0)
    assert abs(stamp.timestamp() - record.created) < 1e-3
    return data


# ---------------------------------------------------------------------------------------------
# A real worker run.


async def test_success_records_fields_and_no_arguments(
    app: Soniq, captured: Capture, started_too: None
) -> None:
    @app.job(name="logs_ok", queue="mail", max_retries=2)
    async def ok(secret: str) -> str:
        return "sent"

    app.instrument(logs=True)
    job_id = await app.enqueue(ok, secret="hunter2-in-args")
    async with running_worker(app) as worker:
        await wait_status(app, job_id, "done")
        await wait_until(lambda: captured.events("job.done"), what="job.done record")

    started, done = captured.one("job.started"), captured.one("job.done")
    assert started.levelno == logging.DEBUG
    assert done.levelno == logging.INFO
    for record in (started, done):
        assert record.name == "soniq.jobs"
        assert record.__dict__["job_id"] == job_id
        assert record.__dict__["job_name"] == "logs_ok"
        assert record.__dict__["queue"] == "mail"
        assert record.__dict__["attempt"] == 1
        assert record.__dict__["max_attempts"] == 3
        assert record.__dict__["worker_id"] == worker.id
        assert record.__dict__["queue_wait_ms"] >= 0
        assert "trace_id" not in record.__dict__  # no span is current without tracing
        assert "job_args" not in record.__dict__
    assert started.getMessage() == "Job started"  # static: the data is in the fields
    assert done.getMessage() == "Job done"
    assert "duration_ms" not in started.__dict__
    assert done.__dict__["duration_ms"] >= 0
    assert done.__dict__["outcome"] == "done"
    assert "error" not in done.__dict__

    # The worker's own lines are the worker events: once each, with the worker's id.
    assert captured.one("worker.started").__dict__["worker_id"] == worker.id
    assert captured.one("worker.stopping").__dict__["worker_id"] == worker.id

    text = TextFormatter()
    for record in captured.records:
        assert "hunter2-in-args" not in JsonFormatter().format(record)
        assert "hunter2-in-args" not in text.format(record)
    line = text.format(done)
    assert "\n" not in line
    assert "Job done" in line and "job_name=logs_ok" in line and "attempt=1/3" in line
    assert f"job_id={job_id}" in line


async def test_at_info_a_successful_attempt_is_one_record(app: Soniq, captured: Capture) -> None:
    """The default level logs each attempt once, at its end, as Oban does: the start is DEBUG."""

    @app.job(name="logs_once")
    async def once(n: int) -> int:
        return n

    app.instrument(logs=True)
    job_ids = await app.enqueue_many(once, [{"n": i} for i in range(5)])
    async with running_worker(app):
        for job_id in job_ids:
            await wait_status(app, job_id, "done")
        await wait_until(lambda: len(captured.events("job.done")) == 5, what="5 job.done records")
    attempt_records = [r for r in captured.records if r.name == "soniq.jobs"]
    assert sorted(r.__dict__["job_id"] for r in attempt_records) == sorted(job_ids)
    assert {r.__dict__["event"] for r in attempt_records} == {"job.done"}
    assert captured.events("job.started") == []


async def test_arguments_are_logged_only_when_opted_in(
    app: Soniq, captured: Capture, started_too: None
) -> None:
    @app.job(name="logs_args")
    async def take(user_id: int, note: str) -> None:
        return None

    app.instrument(logs=LogConfig(log_args=True))
    job_id = await app.enqueue(take, user_id=7, note="a b")
    async with running_worker(app):
        await wait_status(app, job_id, "done")
        await wait_until(lambda: captured.events("job.done"), what="job.done record")
    started = captured.one("job.started")
    assert started.__dict__["job_args"] == {"user_id": 7, "note": "a b"}
    assert as_json(started)["job_args"] == {"user_id": 7, "note": "a b"}
    # At INFO the end of the attempt is its only record, so it carries them too.
    assert captured.one("job.done").__dict__["job_args"] == {"user_id": 7, "note": "a b"}


async def test_retry_then_dead_letter(app: Soniq, captured: Capture) -> None:
    @app.job(name="logs_fail", max_retries=1, retry_backoff=0)
    async def fail() -> None:
        raise ValueError("boom")

    app.instrument(logs=True)
    job_id = await app.enqueue(fail)
    async with running_worker(app):
        await wait_status(app, job_id, "dead_letter")
        await wait_until(lambda: captured.events("job.dead_letter"), what="dead letter record")

    retry, dead = captured.one("job.retry"), captured.one("job.dead_letter")
    assert retry.levelno == logging.WARNING
    assert retry.getMessage() == "Job failed; will retry"
    assert retry.__dict__["attempt"] == 1 and retry.__dict__["max_attempts"] == 2
    assert retry.__dict__["outcome"] == "retry"
    assert retry.__dict__["error_type"] == "ValueError"
    assert retry.__dict__["error"] == "boom"
    assert retry.__dict__["duration_ms"] >= 0
    assert retry.__dict__["retry_delay_ms"] == 0
    assert datetime.fromisoformat(retry.__dict__["next_attempt_at"]).utcoffset() == timedelta(0)
    assert retry.exc_info is None  # a retry is expected; the traceback waits for the last try

    assert dead.levelno == logging.ERROR
    assert dead.__dict__["job_id"] == job_id
    assert dead.__dict__["attempt"] == 2
    assert dead.__dict__["outcome"] == "dead_letter"
    assert dead.__dict__["error_type"] == "ValueError"
    assert dead.__dict__["error"] == "boom"
    data = as_json(dead)
    assert data["event"] == "job.dead_letter" and data["level"] == "ERROR"
    assert data["job_id"] == job_id and data["logger"] == "soniq.jobs"
    assert isinstance(data["exception"], str)
    assert data["exception"].startswith("Traceback (most recent call last):")
    assert data["exception"].rstrip().endswith("ValueError: boom")

    text = TextFormatter().format(dead)
    first, *rest = text.splitlines()
    assert "error_type=ValueError" in first and "attempt=2/2" in first
    assert rest and rest[0].startswith("Traceback")
    assert "retry_delay_ms=0" in TextFormatter().format(retry)

    custom = "tests.test_logs.test_retry_then_dead_letter.<locals>.Declined"

    class Declined(Exception):
        pass

    @app.job(name="logs_declined", max_retries=0)
    def declined() -> None:
        raise Declined("card declined\nby bank")

    job_id = await app.enqueue(declined)
    async with running_worker(app):
        await wait_status(app, job_id, "dead_letter")
        await wait_until(lambda: len(captured.events("job.dead_letter")) == 2, what="record")
    last = captured.events("job.dead_letter")[-1]
    assert last.__dict__["error_type"] == custom
    assert 'error="card declined\\nby bank"' in TextFormatter().format(last)


async def test_user_lines_carry_the_job_and_span_in_async_and_thread_jobs(
    app: Soniq, captured: Capture, spans: tuple[Tracer, InMemorySpanExporter]
) -> None:
    tracer, exporter = spans
    threads: dict[str, int] = {}

    @app.job(name="logs_async")
    async def in_loop() -> None:
        threads["async"] = threading.get_ident()
        user_log.info("line from async job")
        user_log.info("with my own id", extra={"job_id": "mine"})

    @app.job(name="logs_thread", max_retries=0)
    def in_thread() -> None:
        threads["thread"] = threading.get_ident()
        user_log.warning("line from thread job")
        raise RuntimeError("thread failed")

    @app.after_job
    def after(job_name: str, job_id: str, duration_ms: float) -> None:
        user_log.info("line from hook")

    app.middleware.add_builtin(SpanLayer(tracer))
    app.instrument(logs=True)
    async_id = await app.enqueue(in_loop)
    thread_id = await app.enqueue(in_thread)
    async with running_worker(app):
        await wait_status(app, async_id, "done")
        await wait_status(app, thread_id, "dead_letter")
        await wait_until(
            lambda: captured.events("job.dead_letter") and captured.events("job.done"),
            what="final records",
        )
    assert threads["thread"] != threads["async"] == threading.get_ident()

    for job_id, name, message in (
        (async_id, "logs_async", "line from async job"),
        (thread_id, "logs_thread", "line from thread job"),
    ):
        trace_id, span_id = ids_of(span_of(exporter, job_id))
        (line,) = captured.messages(message)
        fields = as_json(line)
        assert fields["job_id"] == job_id
        assert fields["job_name"] == name
        assert fields["attempt"] == 1
        assert fields["trace_id"] == trace_id and fields["span_id"] == span_id
        assert fields["logger"] == "tests.logs.user"
        # The layer's own records of this attempt point at the same span.
        for record in captured.records:
            if record.name == "soniq.jobs" and record.__dict__["job_id"] == job_id:
                assert (record.__dict__["trace_id"], record.__dict__["span_id"]) == (
                    trace_id,
                    span_id,
                )

    (hook_line,) = captured.messages("line from hook")
    assert hook_line.__dict__["job_id"] == async_id  # hooks run inside the attempt too
    (own,) = captured.messages("with my own id")
    assert own.__dict__["job_id"] == "mine"  # the caller's extra= wins, and does not crash

    # Once the job has ended, nothing carries it: not the loop, not another thread.
    user_log.info("after the job")
    done_thread = threading.Thread(target=user_log.info, args=("after, other thread",))
    done_thread.start()
    done_thread.join()
    for message in ("after the job", "after, other thread"):
        (record,) = captured.messages(message)
        for key in ("job_id", "job_name", "attempt", "trace_id", "span_id"):
            assert key not in record.__dict__


async def test_install_is_idempotent_and_replaces_config(app: Soniq) -> None:
    app.instrument(logs=True)
    app.instrument(logs=True)
    layers = [m for m in app.middleware if isinstance(m, LogMiddleware)]
    assert len(layers) == 1 and layers[0].config == LogConfig()
    app.instrument(logs=LogConfig(logger_name="myapp.jobs"))
    layers = [m for m in app.middleware if isinstance(m, LogMiddleware)]
    assert len(layers) == 1 and layers[0].logger.name == "myapp.jobs"
    with pytest.raises(TypeError):
        app.instrument(logs="yes")


# ---------------------------------------------------------------------------------------------
# Secrets in the database URL.


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:pw@db:5432/app", "postgresql://u:***@db:5432/app"),
        (
            "postgresql://u@db/app?password=pw&sslmode=require",
            "postgresql://u@db/app?password=***&sslmode=require",
        ),
        ("postgresql://u:pw@db/app?PASSWORD=pw2", "postgresql://u:***@db/app?PASSWORD=***"),
        ("postgresql://db/app?sslpassword=key", "postgresql://db/app?sslpassword=***"),
        ("postgresql://u@db/app?sslmode=require", "postgresql://u@db/app?sslmode=require"),
        ("postgresql://u:p%40ss@[::1]:5432/app", "postgresql://u:***@[::1]:5432/app"),
    ],
)
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def secret_url(base: str) -> tuple[str, list[str]]:
    """``base`` with secrets in it that PostgreSQL ignores (trust), or its own password."""
    parts = urlsplit(base)
    if parts.password:
        return base, [parts.password]
    netloc = f"{parts.username or 'postgres'}:NetlocS3cret@{parts.netloc.rsplit('@', 1)[-1]}"
    query = "&".join(q for q in (parts.query, "password=QueryS3cret") if q)
    return urlunsplit(parts._replace(netloc=netloc, query=query)), ["NetlocS3cret", "QueryS3cret"]


APP_MODULE = """
import logging
from soniq import Soniq

app = Soniq()
log = logging.getLogger("userapp")

@app.job(name="cli_ok")
async def cli_ok(n: int) -> int:
    log.info("user line in job")
    return n

@app.job(name="cli_fail", max_retries=0)
def cli_fail() -> None:
    raise RuntimeError("nope")
"""


async def test_cli_worker_json_lines_without_secrets(
    app: Soniq, clean_db: str, tmp_path: Path
) -> None:
    @app.job(name="cli_ok")
    async def cli_ok(n: int) -> int:
        return n

    @app.job(name="cli_fail", max_retries=0)
    def cli_fail() -> None:
        return None

    ok_id = await app.enqueue("cli_ok", n=1)
    fail_id = await app.enqueue("cli_fail")
    url, secrets = secret_url(clean_db)
    (tmp_path / "logapp.py").write_text(textwrap.dedent(APP_MODULE))
    env = {**os.environ, "SONIQ_DATABASE_URL": url, "SONIQ_POLL_INTERVAL": "0.5"}
    env.pop("SONIQ_LOG_FORMAT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "soniq",
        "worker",
        "logapp:app",
        "--instrument",
        "logs",
        "--log-format",
        "json",
        "--concurrency",
        "2",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_status(app, ok_id, "done", timeout=60)
        await wait_status(app, fail_id, "dead_letter", timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    text = out.decode() + err.decode()
    for secret in secrets:
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "the worker logged nothing"
    for line in lines:
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    events = [line.get("event") for line in lines]
    for event in ("worker.started", "job.done", "job.dead_letter", "worker.stopping"):
        assert event in events
    assert "job.started" not in events  # DEBUG; the CLI logs INFO by default
    (uses,) = [line for line in lines if line["message"].startswith("Soniq uses database")]
    assert "***" in uses["message"]
    (user,) = [line for line in lines if line["message"] == "user line in job"]
    assert user["job_id"] == ok_id and user["job_name"] == "cli_ok" and user["attempt"] == 1
    (dead,) = [line for line in lines if line.get("event") == "job.dead_letter"]
    assert dead["job_id"] == fail_id and "RuntimeError: nope" in dead["exception"]


async def test_records_carry_the_ids_of_soniq_otels_attempt_span(
    app: Soniq, captured: Capture, started_too: None
) -> None:
    """With the real tracing layer (not a stand-in), every record of an attempt, the layer's own
    and the user's, names the exported ``process`` span."""
    from soniq_otel import OtelConfig

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @app.job(name="logs_traced", max_retries=1, retry_backoff=0)
    async def traced(n: int) -> None:
        user_log.info("inside traced job")
        if n == 0:
            raise ValueError("first attempt fails")

    app.instrument(otel=OtelConfig(tracer_provider=provider), logs=True)
    ok_id = await app.enqueue(traced, n=1)
    retried_id = await app.enqueue(traced, n=0)
    try:
        async with running_worker(app):
            await wait_status(app, ok_id, "done")
            await wait_status(app, retried_id, "dead_letter")
    finally:
        provider.shutdown()

    process = {
        (s.attributes or {}).get("messaging.message.id"): s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CONSUMER and (s.attributes or {}).get("soniq.job.attempt") == 1
    }
    for job_id in (ok_id, retried_id):
        trace_id, span_id = ids_of(process[job_id])
        mine = [
            r
            for r in captured.records
            if r.__dict__.get("job_id") == job_id and r.__dict__.get("attempt") == 1
        ]
        events = {r.__dict__.get("event") for r in mine}
        assert "job.started" in events and events & {"job.done", "job.retry"}
        assert any(r.getMessage() == "inside traced job" for r in mine)
        for record in mine:
            assert (record.__dict__["trace_id"], record.__dict__["span_id"]) == (
                trace_id,
                span_id,
            ), record.getMessage()
