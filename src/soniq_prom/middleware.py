"""The metrics layer of the chain: it only translates chain events into metric updates."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import SpanContext
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from soniq import AttemptContext, EnqueueContext, Middleware
from soniq.middleware import EnqueueNext, ObservingLayer

from .config import PrometheusConfig
from .exposition import MetricsServer
from .families import Backend, ClientFamilies, LocalFamilies, Series, SeriesCache
from .multiprocess import is_multiprocess_child
from .queue_state import QueueStateCollector

if TYPE_CHECKING:
    from soniq import Soniq, Worker

logger = logging.getLogger("soniq")


def sampled_span(ctx: AttemptContext | None = None) -> SpanContext | None:
    """The attempt's span context (``ctx.span_context``, else the current span's), if it is
    sampled: an exemplar pointing at a trace that the tracing backend actually keeps. Its ids
    are spelt out only when a scrape asks for them (``families.exemplar_labels``), not on every
    attempt."""
    context = ctx.span_context if ctx is not None else None
    if context is None:
        context = trace.get_current_span().get_span_context()
    # The sampled bit of the W3C trace flags, read as an int (the property costs more).
    return context if context.trace_flags & 1 and context.is_valid else None


class PrometheusMetrics(ObservingLayer):
    """Counts enqueues and attempts, times them, and serves ``/metrics`` when the worker has a
    ``metrics_port``. Added by ``app.instrument(prometheus=...)``."""

    telemetry = True
    order = 30

    def __init__(self, app: Soniq, config: PrometheusConfig | Any = None) -> None:
        self.app = app
        self.config = PrometheusConfig.of(config)
        self.registry: CollectorRegistry = self.config.registry or CollectorRegistry()
        # A worker started by `soniq worker --processes N` writes its metrics to the shared
        # directory; the parent serves them all, and the queue state, once.
        self.multiprocess_child = is_multiprocess_child()
        self.backend: Backend
        self._collectors: list[Collector] = []
        if self.multiprocess_child:
            client = ClientFamilies(self.registry, self.config)
            self._collectors.extend(client.collectors)
            self.backend = client
        else:
            local = LocalFamilies(self.config)
            self.registry.register(local)
            self._collectors.append(local)
            self.backend = local
        self.series = SeriesCache(self.backend.series, self.config, app.registry.__contains__)
        self.queue_state: QueueStateCollector | None = None
        if self.config.queue_state and not self.multiprocess_child:
            self.queue_state = QueueStateCollector(
                app,
                ttl=self.config.queue_state_ttl,
                timeout=self.config.queue_state_timeout,
                max_queues=self.config.max_queues,
                overflow=self.config.overflow_label,
                on_error=self._queue_state_failed,
            )
            self.registry.register(self.queue_state)
            self._collectors.append(self.queue_state)
        self.server: MetricsServer | None = None
        self._workers: list[Worker] = []
        # prometheus_client's multiprocess files cannot hold exemplars.
        self._exemplars = self.config.exemplars and not self.multiprocess_child

    def __repr__(self) -> str:
        return "PrometheusMetrics()"

    # -- attempts ------------------------------------------------------------------------
    def begin(self, ctx: AttemptContext) -> tuple[Series, SpanContext | None, float]:
        series = self.series.get(ctx.queue, ctx.job_name)
        exemplar = sampled_span(ctx) if self._exemplars else None
        series.begin(ctx.queue_wait_s, exemplar)
        return series, exemplar, time.perf_counter()

    def end(
        self,
        ctx: AttemptContext,
        state: tuple[Series, SpanContext | None, float],
        error: BaseException | None,
    ) -> None:
        series, exemplar, started = state
        ms = ctx.duration_ms  # the job function's own time, when it was called
        # No outcome: the attempt was cancelled by shutdown and goes back uncounted.
        series.end(
            ctx.outcome,
            ms / 1000.0 if ms is not None else time.perf_counter() - started,
            exemplar,
        )

    # -- enqueues ------------------------------------------------------------------------
    async def enqueue(self, ctx: EnqueueContext, call_next: EnqueueNext) -> None:
        await call_next(ctx)
        jobs = ctx.jobs
        if len(jobs) == 1:
            job = jobs[0]
            series = self.series.get(job.queue, job.job_name)
            if job.deduplicated:
                series.deduplicated(1)
            else:
                series.enqueued(1)
            return
        counts: dict[tuple[str, str], int] = {}
        dedup: dict[tuple[str, str], int] = {}
        for job in jobs:
            key = (job.queue, job.job_name)
            if job.deduplicated:
                dedup[key] = dedup.get(key, 0) + 1
            else:
                counts[key] = counts.get(key, 0) + 1
        for (queue, name), n in counts.items():
            self.series.get(queue, name).enqueued(n)
        for (queue, name), n in dedup.items():
            self.series.get(queue, name).deduplicated(n)

    # -- worker lifecycle ----------------------------------------------------------------
    async def startup(self, worker: Worker) -> None:
        self._workers.append(worker)
        self.backend.add_capacity(worker.concurrency)
        # Registered jobs show zeros from the start, so rate() and alerts have a series.
        for spec in self.app.registry:
            self.series.get(spec.queue, spec.name)
        if self.queue_state is not None:
            self.queue_state.attach(asyncio.get_running_loop())
        settings = self.app.settings
        if (
            settings.metrics_port is not None
            and self.server is None
            and (not self.multiprocess_child)
        ):
            self.server = MetricsServer(self.registry, settings.metrics_host, settings.metrics_port)
            logger.info(
                "Serving Prometheus metrics on %s",
                self.server.url,
                extra={"event": "metrics.serving", "url": self.server.url},
            )

    async def shutdown(self, worker: Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
            self.backend.add_capacity(-worker.concurrency)
        if not self._workers:
            await self.close()

    async def close(self) -> None:
        """Stop serving and give up the queue-state reporter role (the last worker's shutdown
        does this; call it when the app serves metrics without a worker, e.g. over ASGI)."""
        if self.server is not None:
            server, self.server = self.server, None
            await asyncio.to_thread(server.close)  # waits for the serving thread's poll
        if self.queue_state is not None:
            await self.queue_state.close()

    def unregister(self) -> None:
        """Take this layer's metrics out of its registry (when a new config replaces it)."""
        if self._workers or self.server is not None:
            raise RuntimeError(
                "The Prometheus metrics layer is in use by a running worker; change its "
                "configuration before starting workers"
            )
        for collector in self._collectors:
            self.registry.unregister(collector)
        self._collectors.clear()

    # -- errors --------------------------------------------------------------------------
    def count_telemetry_error(self, _middleware: Middleware, _error: BaseException) -> None:
        self.backend.count_telemetry_error()

    def _queue_state_failed(self, error: BaseException) -> None:
        self.app.middleware.report_telemetry_error(self, error)
