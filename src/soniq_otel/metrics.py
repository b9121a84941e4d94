"""The OpenTelemetry metrics layer: chain events in, instrument updates out.

Names follow the messaging semantic conventions where they have one
(``messaging.client.sent.messages``, ``messaging.client.operation.duration``,
``messaging.client.consumed.messages``, ``messaging.process.duration``); Soniq's own
(``soniq.*``) cover what they lack. docs/metrics.md maps each to its Prometheus twin.

Attribute sets are built once per (queue, job name) and outcome and then reused: the SDK looks
an attribute set up by its contents, so a prebuilt dict costs only that lookup. Queue and job
names are bounded as the Prometheus labels are: unregistered job names and queues past
``max_queues`` share ``overflow_label``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import soniq
from soniq.errors import JobTimeout
from soniq.instrumentation import BoundedLabel
from soniq.middleware import EnqueueContext, EnqueueNext, ObservingLayer

from . import attributes as A
from .config import OtelConfig
from .provider import flush, global_or_built_meter_provider
from .queue_gauges import QueueGauges

if TYPE_CHECKING:
    from opentelemetry.util.types import AttributeValue

    from soniq.app import Soniq
    from soniq.context import AttemptContext
    from soniq.worker import Worker

logger = logging.getLogger("soniq.otel")

# The semantic conventions' advice for messaging durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Queue wait reaches further: a backlog is measured in minutes.
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

Attrs = dict[str, "AttributeValue"]


class _JobAttrs:
    """The attribute sets of one (queue, job name), built once."""

    __slots__ = ("_ended", "process", "send")

    def __init__(self, queue: str, job_name: str) -> None:
        base: Attrs = {
            A.MESSAGING_SYSTEM: A.SYSTEM,
            A.MESSAGING_DESTINATION_NAME: queue,
            A.JOB_NAME: job_name,
        }
        self.send: Attrs = {
            **base,
            A.MESSAGING_OPERATION_NAME: "send",
            A.MESSAGING_OPERATION_TYPE: "send",
        }
        self.process: Attrs = {
            **base,
            A.MESSAGING_OPERATION_NAME: "process",
            A.MESSAGING_OPERATION_TYPE: "process",
        }
        self._ended: dict[tuple[str, str | None], Attrs] = {}

    def ended(self, outcome: str, error_type: str | None) -> Attrs:
        key = (outcome, error_type)
        attrs = self._ended.get(key)
        if attrs is None:
            attrs = {**self.process, A.JOB_OUTCOME: outcome}
            if error_type is not None:
                attrs[A.ERROR_TYPE] = error_type
            self._ended[key] = attrs
        return attrs


class OtelMetrics(ObservingLayer):
    """Built-in telemetry layer (order 31: inside tracing, so histogram exemplars point at
    the attempt's span); added by ``app.instrument(otel={"metrics": True})``."""

    telemetry = True
    order = 31

    def __init__(self, app: Soniq, config: OtelConfig) -> None:
        self.app = app
        self.config = config
        self.provider: Any = None
        self._queues = BoundedLabel(config.max_queues, config.overflow_label, None)
        self._names = BoundedLabel(
            config.max_job_names, config.overflow_label, app.registry.__contains__
        )
        self._by_raw: dict[tuple[str, str], _JobAttrs] = {}
        self._lock = threading.Lock()
        self._resolved = False
        self.gauges = QueueGauges(app, config, self._gauges_failed)
        self._workers: list[Worker] = []

    def __repr__(self) -> str:
        return "OtelMetrics()"

    def _gauges_failed(self, error: BaseException) -> None:
        self.app.middleware.report_telemetry_error(self, error)

    # -- provider ----------------------------------------------------------------------------
    def _resolve(self) -> None:
        with self._lock:
            if self._resolved:
                return
            cfg = self.config
            try:
                provider = cfg.meter_provider or global_or_built_meter_provider(
                    cfg.service_name, cfg.flush_timeout
                )
            except Exception:
                from opentelemetry.metrics import NoOpMeterProvider

                # Reported once by the chain; metrics stay quiet rather than fail jobs.
                provider = NoOpMeterProvider()
                self._make_instruments(provider)
                raise
            self._make_instruments(provider)

    def _make_instruments(self, provider: Any) -> None:
        self.provider = provider
        meter = provider.get_meter("soniq", soniq.__version__)
        self.sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Jobs written to the queue (counted once the write returned).",
        )
        self.operation_duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Seconds an enqueue call took (one job or a batch).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.consumed = meter.create_counter(
            "messaging.client.consumed.messages",
            unit="{message}",
            description="Jobs claimed and handed to the job code (one per attempt).",
        )
        self.process_duration = meter.create_histogram(
            "messaging.process.duration",
            unit="s",
            description="Seconds the job function ran, per attempt.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.attempts = meter.create_counter(
            "soniq.job.attempts",
            unit="{attempt}",
            description="Job attempts finished, by soniq.job.outcome: done, retry, dead_letter.",
        )
        self.queue_wait = meter.create_histogram(
            "soniq.job.queue_wait",
            unit="s",
            description="Seconds between a job becoming due and its attempt being claimed, on "
            "the database clock.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS,
        )
        self.gauges.register(meter)
        self._resolved = True

    def _job(self, queue: str, job_name: str) -> _JobAttrs:
        attrs = self._by_raw.get((queue, job_name))
        if attrs is not None:
            return attrs
        with self._lock:  # rare: a pair seen for the first time
            q, n = self._queues(queue), self._names(job_name)
            attrs = _JobAttrs(q, n)
            if self.config.overflow_label not in (q, n):
                # Only bounded pairs are remembered by their raw value, so unknown names
                # cannot grow this dict without limit.
                self._by_raw[(queue, job_name)] = attrs
        return attrs

    # -- worker lifecycle ----------------------------------------------------------------------
    async def startup(self, worker: Worker) -> None:
        self._workers.append(worker)
        self.gauges.attach(self.app)
        if not self._resolved:
            self._resolve()

    async def shutdown(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if self.provider is not None:
            await flush(self.provider, self.config.flush_timeout, "metrics")
        if not self._workers:
            await self.gauges.close()

    # -- enqueues ------------------------------------------------------------------------------
    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        if not self._resolved:
            self._resolve()
        first = ctx.jobs[0]
        attrs = self._job(first.queue, first.job_name).send
        started = time.perf_counter()
        try:
            await call_next(ctx)
        except Exception as exc:
            failed = {**attrs, A.ERROR_TYPE: _error_type(exc)}
            self.operation_duration.record(time.perf_counter() - started, failed)
            raise
        self.operation_duration.record(time.perf_counter() - started, attrs)
        self.sent.add(len(ctx.jobs), attrs)

    # -- attempts ------------------------------------------------------------------------------
    def begin(self, ctx: AttemptContext) -> tuple[_JobAttrs, float]:
        if not self._resolved:
            self._resolve()
        job = self._job(ctx.queue, ctx.job_name)
        process = job.process
        self.consumed.add(1, process)
        self.queue_wait.record(ctx.queue_wait_s, process)
        return job, time.perf_counter()

    def end(
        self, ctx: AttemptContext, state: tuple[_JobAttrs, float], error: BaseException | None
    ) -> None:
        outcome = ctx.outcome
        # No outcome: cancelled by a worker shutdown; the attempt goes back uncounted.
        if outcome is None:
            return
        job, started = state
        ms = ctx.duration_ms  # the job function's own time, when it was called
        seconds = ms / 1000.0 if ms is not None else time.perf_counter() - started
        # A CancelledError (cancel_job) is not a failure: no error.type.
        error_type = _error_type(error) if isinstance(error, Exception) else None
        # str(): an Outcome is its text; the attribute is a plain string.
        attrs = job.ended(str(outcome), error_type)
        self.process_duration.record(seconds, attrs)
        self.attempts.add(1, attrs)


def _error_type(error: BaseException) -> str:
    if isinstance(error, JobTimeout):
        return A.TIMEOUT_ERROR_TYPE
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
