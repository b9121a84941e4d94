"""The tracing layer: chain events in, OpenTelemetry spans out.

One PRODUCER span per enqueue call (``send <job>``), whose context is written into each job's
``trace_context`` by the global propagator; one CONSUMER span per attempt (``process <job>``),
current while the inner layers, the hooks and the job run. How an attempt relates to its
enqueue and to the attempt before it is decided here, from what the job carries; nothing
reaches into the worker or the store.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Mapping, Sequence
from contextvars import Token
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

import soniq
from soniq.control import Snooze
from soniq.errors import JobTimeout
from soniq.middleware import EnqueueContext, EnqueueNext, ObservingLayer

from . import attributes as A
from .config import OtelConfig
from .provider import flush, global_or_built

if TYPE_CHECKING:
    from soniq.context import AttemptContext
    from soniq.worker import Worker

logger = logging.getLogger("soniq.otel")

# The previous attempt's context is ours to read back, so it is always W3C, whatever
# propagator the application configured for the creation context.
_W3C = TraceContextTextMapPropagator()
# A fresh root: no ambient span of the worker, no baggage.
_ROOT = otel_context.Context()
_ENQUEUE_LINK: dict[str, AttributeValue] = {A.LINK_TYPE: A.LINK_ENQUEUE}
_PREVIOUS_LINK: dict[str, AttributeValue] = {A.LINK_TYPE: A.LINK_PREVIOUS_ATTEMPT}
# Read once for the per-attempt path: an enum member or a module attribute looked up anew on
# every attempt is a few dozen ns each.
_CONSUMER = SpanKind.CONSUMER
_MESSAGE_ID, _ATTEMPT, _MAX_ATTEMPTS = A.MESSAGING_MESSAGE_ID, A.JOB_ATTEMPT, A.JOB_MAX_ATTEMPTS
_PRIORITY, _QUEUE_WAIT, _OUTCOME = A.JOB_PRIORITY, A.JOB_QUEUE_WAIT, A.JOB_OUTCOME


class TracingMiddleware(ObservingLayer):
    """Built-in telemetry layer (outermost, order 10); add with :func:`soniq_otel.install`."""

    telemetry = True
    order = 10

    def __init__(self, config: OtelConfig | None = None) -> None:
        self.config = config if config is not None else OtelConfig()
        self.provider: trace.TracerProvider | None = None
        self._tracer: trace.Tracer | None = None
        wanted = self.config.record_args
        self._record_all_args = wanted is True
        self._record_arg_names: frozenset[str] = (
            frozenset() if isinstance(wanted, bool) else frozenset(wanted)
        )
        self._last_extracted: (
            tuple[
                TextMapPropagator,
                tuple[tuple[str, str], ...],
                otel_context.Context,
                trace.SpanContext,
            ]
            | None
        ) = None
        # (queue, job name, worker id) -> the span name and the attributes that do not change
        # from one attempt to the next, built once.
        self._static: dict[tuple[str, str, str], tuple[str, dict[str, AttributeValue]]] = {}

    def __repr__(self) -> str:
        return f"TracingMiddleware({self.config!r})"

    def _static_of(self, ctx: AttemptContext) -> tuple[str, dict[str, AttributeValue]]:
        key = (ctx.queue, ctx.job_name, ctx.worker_id)
        found = self._static.get(key)
        if found is None:
            if len(self._static) > 10_000:  # queues and job names are few; this is a guard
                self._static.clear()
            found = self._static[key] = (
                f"process {ctx.job_name}",
                {
                    A.MESSAGING_SYSTEM: A.SYSTEM,
                    A.MESSAGING_OPERATION_NAME: "process",
                    A.MESSAGING_OPERATION_TYPE: "process",
                    A.MESSAGING_DESTINATION_NAME: ctx.queue,
                    A.MESSAGING_CLIENT_ID: ctx.worker_id,
                    A.JOB_NAME: ctx.job_name,
                },
            )
        return found

    # -- provider ----------------------------------------------------------------------------
    @property
    def tracer(self) -> trace.Tracer:
        """Resolved at first use, not at install, so a provider the application sets up after
        ``app.instrument()`` (but before its first enqueue or worker) is the one used."""
        if self._tracer is None:
            self._resolve()
        assert self._tracer is not None
        return self._tracer

    def _resolve(self) -> None:
        cfg = self.config
        try:
            provider = cfg.tracer_provider or global_or_built(cfg.service_name, cfg.flush_timeout)
        except Exception:
            # A misconfigured exporter must not fail jobs, nor be retried for every job:
            # tracing goes quiet and the error is reported once, by the chain.
            self.provider = trace.NoOpTracerProvider()
            self._tracer = self.provider.get_tracer("soniq", soniq.__version__)
            raise
        self.provider = provider
        self._tracer = provider.get_tracer("soniq", soniq.__version__)

    async def startup(self, worker: Worker) -> None:
        # Resolving here surfaces a misconfiguration when the worker starts, not at a job.
        if self._tracer is None:
            self._resolve()
        if self.config.freeze_gc_at_start:
            # Spans wait in the export queue long enough to outlive the young generations, so
            # the collector runs full collections, and each one walks every object the
            # process made at start-up (the app, asyncpg, the SDK): 15-30 us per traced job in
            # bench measurements. Frozen, those are skipped (Python's own advice for long-lived
            # processes); the rest is collected as before.
            gc.collect()
            gc.freeze()

    async def shutdown(self, worker: Worker) -> None:
        if self.provider is not None:
            await flush(self.provider, self.config.flush_timeout)

    # -- enqueue -----------------------------------------------------------------------------
    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        jobs = ctx.jobs
        first = jobs[0]
        attrs: dict[str, AttributeValue] = {
            A.MESSAGING_SYSTEM: A.SYSTEM,
            A.MESSAGING_OPERATION_NAME: "send",
            A.MESSAGING_OPERATION_TYPE: "send",
            A.MESSAGING_DESTINATION_NAME: first.queue,
            A.JOB_NAME: first.job_name,
        }
        if ctx.batch:
            attrs[A.MESSAGING_BATCH_MESSAGE_COUNT] = len(jobs)
        else:
            attrs[A.MESSAGING_MESSAGE_ID] = first.id
            attrs[A.JOB_PRIORITY] = first.priority
            if first.scheduled_at is not None:
                attrs[A.JOB_SCHEDULED_AT] = first.scheduled_at.isoformat()
            elif first.delay_s:
                attrs[A.JOB_DELAY] = first.delay_s
            if self._record_all_args or self._record_arg_names:
                self._add_args(attrs, json.loads(first.args_json))
            if first.schedule is not None:
                attrs[A.SCHEDULE_NAME] = first.schedule
                if first.fire_time is not None:
                    attrs[A.SCHEDULE_FIRE_TIME] = first.fire_time.isoformat()
        span = self.tracer.start_span(
            f"send {first.job_name}", kind=SpanKind.PRODUCER, attributes=attrs
        )
        # On top of the current context, so the application's baggage travels with the job.
        active = trace.set_span_in_context(span)
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=active)
        if carrier:
            for job in jobs:
                # A creation context someone put there first is theirs; leave it as it is.
                for key, value in carrier.items():
                    job.trace_context.setdefault(key, value)
        token = otel_context.attach(active)
        try:
            await call_next(ctx)
            if span.is_recording() and first.unique is not None:
                _mark_deduplicated(span, ctx)
        except Exception as exc:
            if span.is_recording():
                span.set_attribute(A.ERROR_TYPE, _error_type(exc))
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    # -- attempts ----------------------------------------------------------------------------
    def begin(self, ctx: AttemptContext) -> tuple[trace.Span, Token[otel_context.Context]]:
        tracer = self._tracer if self._tracer is not None else self.tracer
        # A job enqueued without tracing carries nothing to relate to: a fresh root.
        parent, links = self._relations(ctx) if ctx.trace_context else (_ROOT, ())
        name, static = self._static_of(ctx)
        attrs: dict[str, AttributeValue] = {
            **static,
            _MESSAGE_ID: ctx.job_id,
            _ATTEMPT: ctx.attempt,
            _MAX_ATTEMPTS: ctx.max_attempts,
            _PRIORITY: ctx.priority,
            _QUEUE_WAIT: ctx.queue_wait_s,
        }
        if ctx.revived:
            attrs[A.JOB_REVIVED] = True
        if self._record_all_args or self._record_arg_names:
            self._add_args(attrs, ctx.args)
        span = tracer.start_span(
            name, context=parent, kind=_CONSUMER, attributes=attrs, links=links
        )
        # For the layers inside (logs, metrics): the same ids they would find as the current
        # span, without each looking it up.
        ctx.span_context = span.get_span_context()
        # Current for everything inside: user middlewares, hooks, the job (plain ``def`` jobs
        # get a copy of this context in their thread), and any span they start.
        return span, otel_context.attach(trace.set_span_in_context(span, parent))

    def end(
        self,
        ctx: AttemptContext,
        state: tuple[trace.Span, Token[otel_context.Context]],
        error: BaseException | None,
    ) -> None:
        span, token = state
        otel_context.detach(token)
        if error is None and ctx.result is None:  # the common case: done, nothing returned
            if span.is_recording():
                span.set_attribute(_OUTCOME, ctx.outcome or "done")
            span.end()
            return
        if error is None or isinstance(error, Exception):
            self._end_attempt(span, ctx, error, interrupted=False)
        else:  # CancelledError: shutdown or cancel_job stopped it
            self._end_attempt(span, ctx, None, interrupted=True)

    def _relations(self, ctx: AttemptContext) -> tuple[otel_context.Context, Sequence[Link]]:
        """The attempt's parent context and links, from what its job carries."""
        carrier = ctx.trace_context
        if not carrier:
            return _ROOT, []
        parent = _ROOT
        links: list[Link] = []
        mode = ctx.spec.trace_parent or self.config.trace_parent
        if mode != "none":
            extracted, creation = self._extract(carrier)
            if not creation.is_valid:
                parent = extracted  # baggage only
            else:
                links.append(Link(creation, _ENQUEUE_LINK))
                # Time since the enqueue, on the database clock: scheduled_at and created_at
                # are both database timestamps, queue_wait_s is now() - scheduled_at there.
                age = (ctx.scheduled_at - ctx.enqueued_at).total_seconds() + ctx.queue_wait_s
                if mode == "child" and not ctx.revived and age <= self.config.max_parent_age:
                    parent = extracted
                else:
                    # A new trace that still carries the job's baggage.
                    parent = trace.set_span_in_context(trace.INVALID_SPAN, extracted)
        previous = carrier.get(A.PREVIOUS_ATTEMPT_KEY)
        if previous:
            before = trace.get_current_span(
                _W3C.extract({"traceparent": previous})
            ).get_span_context()
            if before.is_valid:
                links.append(Link(before, _PREVIOUS_LINK))
        return parent, links

    def _extract(self, carrier: dict[str, str]) -> tuple[otel_context.Context, trace.SpanContext]:
        """The creation context a job carries, through the global propagator.

        Jobs enqueued together carry the same context and are usually claimed together, so the
        last one extracted is kept: a Context is immutable, and the propagator's parsing is a
        good part of what a span costs. The previous attempt's key is ours, not the
        propagator's, and stays out of the comparison.
        """
        propagator = propagate.get_global_textmap()
        key = tuple(item for item in carrier.items() if item[0] != A.PREVIOUS_ATTEMPT_KEY)
        cached = self._last_extracted
        if cached is not None and cached[0] is propagator and cached[1] == key:
            return cached[2], cached[3]
        extracted = propagator.extract(carrier)
        creation = trace.get_current_span(extracted).get_span_context()
        self._last_extracted = (propagator, key, extracted, creation)
        return extracted, creation

    def _end_attempt(
        self,
        span: trace.Span,
        ctx: AttemptContext,
        error: Exception | None,
        interrupted: bool,
    ) -> None:
        try:
            if interrupted and ctx.outcome == "cancelled":
                # app.cancel_job stopped it: it ends cancelled, not as a failure.
                if span.is_recording():
                    span.set_attribute(A.JOB_OUTCOME, "cancelled")
                    span.add_event(A.EVENT_CANCELLED)
                return
            if interrupted:
                # Cancelled by a worker shutdown: the job goes back and the attempt does not
                # count, so it is neither a success nor a failure.
                if span.is_recording():
                    span.set_attribute(A.JOB_OUTCOME, "interrupted")
                    span.add_event(A.EVENT_INTERRUPTED)
                return
            if error is None:
                if span.is_recording():
                    span.set_attribute(A.JOB_OUTCOME, ctx.outcome or "done")
                    if isinstance(ctx.result, Snooze):
                        _mark_snoozed(span, ctx, ctx.result)
                return
            if ctx.outcome is None or ctx.error is not error:
                ctx.settle_failure(error)  # as the worker would; it then keeps this decision
            self._leave_for_next_attempt(span, ctx)
            if span.is_recording():
                self._record_failure(span, ctx, error)
        finally:
            span.end()

    @staticmethod
    def _leave_for_next_attempt(span: trace.Span, ctx: AttemptContext) -> None:
        if not span.get_span_context().is_valid:
            return
        carrier: dict[str, str] = {}
        _W3C.inject(carrier, context=trace.set_span_in_context(span))
        traceparent = carrier.get("traceparent")
        if traceparent:
            ctx.trace_context = {**(ctx.trace_context or {}), A.PREVIOUS_ATTEMPT_KEY: traceparent}

    @staticmethod
    def _record_failure(span: trace.Span, ctx: AttemptContext, error: Exception) -> None:
        timed_out = isinstance(error, JobTimeout)
        error_type = A.TIMEOUT_ERROR_TYPE if timed_out else _error_type(error)
        attrs: dict[str, AttributeValue] = {
            A.JOB_OUTCOME: ctx.outcome or "retry",
            A.ERROR_TYPE: error_type,
        }
        if ctx.outcome == "retry":
            if ctx.next_attempt_at is not None:
                attrs[A.JOB_NEXT_ATTEMPT_AT] = ctx.next_attempt_at.isoformat()
            if ctx.retry_delay is not None:
                attrs[A.JOB_RETRY_DELAY] = ctx.retry_delay
        if timed_out and ctx.spec.timeout is not None:
            attrs[A.JOB_TIMEOUT] = ctx.spec.timeout
        span.set_attributes(attrs)
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        if ctx.outcome == "dead_letter":
            span.add_event(
                A.EVENT_DEAD_LETTER, {A.JOB_ATTEMPT: ctx.attempt, A.ERROR_TYPE: error_type}
            )

    def _add_args(self, attrs: dict[str, AttributeValue], args: Mapping[str, Any]) -> None:
        for name, value in args.items():
            if self._record_all_args or name in self._record_arg_names:
                attrs[A.JOB_ARGS_PREFIX + name] = _attribute_value(value)


def _mark_deduplicated(span: trace.Span, ctx: EnqueueContext) -> None:
    jobs = ctx.jobs
    if ctx.batch:
        span.set_attribute(A.JOB_DEDUPLICATED_COUNT, sum(j.deduplicated for j in jobs))
        return
    job = jobs[0]
    span.set_attribute(A.JOB_DEDUPLICATED, job.deduplicated)
    if job.deduplicated:
        span.set_attribute(A.MESSAGING_MESSAGE_ID, job.id)  # the existing job's
        span.set_attribute(A.JOB_REPLACED, job.replaced)


def _mark_snoozed(span: trace.Span, ctx: AttemptContext, snooze: Snooze) -> None:
    """A snooze is not an error: the span stays OK and says when the job runs again."""
    attrs: dict[str, AttributeValue] = {A.JOB_SNOOZE_DELAY: snooze.seconds}
    if snooze.reason:
        attrs[A.JOB_SNOOZE_REASON] = snooze.reason
    if ctx.outcome == "dead_letter":  # past max_snoozes
        span.add_event(A.EVENT_DEAD_LETTER, attrs)
    else:
        span.add_event(A.EVENT_SNOOZED, attrs)


def _attribute_value(value: Any) -> AttributeValue:
    if isinstance(value, (str, bool, float)) or (
        isinstance(value, int) and -(2**63) <= value < 2**63
    ):
        return value
    # Lists, objects, None and huge ints: their JSON text, which is how the job received them.
    return json.dumps(value, separators=(",", ":"), default=str)


def _error_type(error: BaseException) -> str:
    """The exception's fully qualified class name, as the semantic conventions ask."""
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
