"""The per-process metric families, and the bounded labels that keep their series few.

A process keeps its numbers in one of two backends with one interface (``Backend``):

* ``LocalFamilies``, the default: plain numbers under one lock, turned into metric families
  only when scraped. An attempt costs a lock and a few additions instead of five
  prometheus_client calls (about half the layer's cost; bench/prom_overhead.py), and a scrape
  sees each histogram whole (its count always equals its +Inf bucket).
* ``ClientFamilies`` for a ``--processes`` child: prometheus_client metric objects, whose
  values live in the memory-mapped files the parent merges; nothing else can do that.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from opentelemetry.trace import SpanContext
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from soniq.instrumentation import BoundedLabel

from .config import PrometheusConfig

OUTCOMES = ("done", "retry", "dead_letter", "snoozed", "cancelled")
JOB_LABELS = ("queue", "job_name")

ENQUEUED = (
    "soniq_jobs_enqueued",
    "Jobs this process wrote to the queue (counted once the write returned).",
)
DEDUPLICATED = (
    "soniq_jobs_deduplicated",
    "Enqueues of unique jobs that met an existing job (its id returned, or its arguments "
    "replaced); not counted in soniq_jobs_enqueued.",
)
ATTEMPTS = (
    "soniq_job_attempts",
    "Job attempts finished, by outcome: done, retry (failed, will run again), dead_letter "
    "(failed for the last time, or snoozed past max_snoozes), snoozed (back later, the attempt "
    "not counted) or cancelled (stopped by cancel_job).",
)
DURATION = ("soniq_job_duration_seconds", "Seconds the job function ran, per attempt.")
QUEUE_WAIT = (
    "soniq_job_queue_wait_seconds",
    "Seconds an attempt waited between becoming due and being claimed, on the database clock "
    "(a deliberate delay or retry backoff is not waiting).",
)
IN_PROGRESS = ("soniq_jobs_in_progress", "Job attempts running now.")

# The sampled span of an attempt, kept as it is: its ids become an exemplar's labels only when
# a scrape reads them (exemplar_labels), so an attempt pays for a reference, not two hex strings.
ExemplarSpan = SpanContext


def exemplar_labels(span: ExemplarSpan) -> dict[str, str]:
    return {"trace_id": format(span.trace_id, "032x"), "span_id": format(span.span_id, "016x")}


class Series(Protocol):
    """One (queue, job name) pair's series."""

    def begin(self, queue_wait_s: float, exemplar: ExemplarSpan | None) -> None: ...

    def end(self, outcome: str | None, seconds: float, exemplar: ExemplarSpan | None) -> None:
        """``outcome`` None: the attempt was cut short by shutdown and is not counted."""

    def enqueued(self, n: int) -> None: ...

    def deduplicated(self, n: int) -> None: ...


class Backend(Protocol):
    """Where one process keeps its numbers."""

    def series(self, queue: str, job_name: str) -> Series: ...

    def add_capacity(self, slots: int) -> None: ...

    def count_telemetry_error(self) -> None: ...


CAPACITY = (
    "soniq_worker_capacity",
    "Job slots of the running workers (their concurrency), summed.",
)
TELEMETRY_ERRORS = (
    "soniq_telemetry_errors",
    "Errors raised inside telemetry (tracing, logs, metrics, the queue-state query); jobs were "
    "not failed by them.",
)


# -- the default backend ----------------------------------------------------------------------
class _Histogram:
    __slots__ = ("counts", "exemplars", "total")

    def __init__(self, size: int) -> None:
        self.counts = [0] * size  # per bucket, not cumulative; the last one is +Inf
        # (span, value, timestamp) of the latest observation in each bucket that had one.
        self.exemplars: list[tuple[ExemplarSpan, float, float] | None] = [None] * size
        self.total = 0.0


# A bucket's exemplar is replaced at most this often (seconds). A scrape shows one exemplar per
# bucket, the latest, so replacing it on every sampled attempt (thousands a second) bought
# nothing but the work; a bucket that sees few observations (the slow outliers exemplars are
# for) still gets each one's.
EXEMPLAR_EVERY = 1.0


def _keep_exemplar(
    exemplars: list[tuple[ExemplarSpan, float, float] | None],
    index: int,
    span: ExemplarSpan,
    value: float,
) -> None:
    now = time.time()
    held = exemplars[index]
    if held is None or now - held[2] >= EXEMPLAR_EVERY:
        exemplars[index] = (span, value, now)


class LocalSeries:
    __slots__ = (
        "_bounds",
        "_lock",
        "_wait_bounds",
        "deduplicated_total",
        "duration",
        "enqueued_total",
        "in_progress",
        "job_name",
        "outcomes",
        "queue",
        "queue_wait",
    )

    def __init__(self, families: LocalFamilies, queue: str, job_name: str) -> None:
        self.queue = queue
        self.job_name = job_name
        self._lock = families.lock
        self._bounds = families.duration_bounds
        self._wait_bounds = families.wait_bounds
        self.enqueued_total = 0
        self.deduplicated_total = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.in_progress = 0
        self.duration = _Histogram(len(self._bounds) + 1)
        self.queue_wait = _Histogram(len(self._wait_bounds) + 1)

    def begin(self, queue_wait_s: float, exemplar: ExemplarSpan | None) -> None:
        # bisect_left finds the first bound >= the value: Prometheus's "le" bucket.
        index = bisect_left(self._wait_bounds, queue_wait_s)
        with self._lock:
            self.in_progress += 1
            wait = self.queue_wait
            wait.counts[index] += 1
            wait.total += queue_wait_s
            if exemplar is not None:
                _keep_exemplar(wait.exemplars, index, exemplar, queue_wait_s)

    def end(self, outcome: str | None, seconds: float, exemplar: ExemplarSpan | None) -> None:
        index = bisect_left(self._bounds, seconds)
        with self._lock:
            self.in_progress -= 1
            if outcome is None:
                return
            self.outcomes[outcome] += 1
            duration = self.duration
            duration.counts[index] += 1
            duration.total += seconds
            if exemplar is not None:
                _keep_exemplar(duration.exemplars, index, exemplar, seconds)

    def enqueued(self, n: int) -> None:
        with self._lock:
            self.enqueued_total += n

    def deduplicated(self, n: int) -> None:
        with self._lock:
            self.deduplicated_total += n


class LocalFamilies:
    """A prometheus_client collector over every LocalSeries."""

    def __init__(self, config: PrometheusConfig) -> None:
        self.lock = threading.Lock()
        self.duration_bounds = tuple(config.duration_buckets)
        self.wait_bounds = tuple(config.queue_wait_buckets)
        # "le" values spelt as prometheus_client spells them in the multiprocess backend.
        self._duration_les = _les(self.duration_bounds)
        self._wait_les = _les(self.wait_bounds)
        self._series: list[LocalSeries] = []
        self._capacity = 0
        self._telemetry_errors = 0

    def series(self, queue: str, job_name: str) -> LocalSeries:
        made = LocalSeries(self, queue, job_name)
        with self.lock:
            self._series.append(made)
        return made

    def add_capacity(self, slots: int) -> None:
        with self.lock:
            self._capacity += slots

    def count_telemetry_error(self) -> None:
        with self.lock:
            self._telemetry_errors += 1

    def describe(self) -> Iterator[Metric]:
        return self._families([], 0, 0)

    def collect(self) -> Iterator[Metric]:
        with self.lock:  # one consistent snapshot; copies only, no formatting under the lock
            snapshot = [
                (
                    s.queue,
                    s.job_name,
                    s.enqueued_total,
                    s.deduplicated_total,
                    dict(s.outcomes),
                    s.in_progress,
                    _copy(s.duration),
                    _copy(s.queue_wait),
                )
                for s in self._series
            ]
            capacity, errors = self._capacity, self._telemetry_errors
        return self._families(snapshot, capacity, errors)

    def _families(
        self,
        snapshot: list[tuple[str, str, int, int, dict[str, int], int, _Histogram, _Histogram]],
        capacity: int,
        telemetry_errors: int,
    ) -> Iterator[Metric]:
        enqueued = CounterMetricFamily(*ENQUEUED, labels=JOB_LABELS)
        deduplicated = CounterMetricFamily(*DEDUPLICATED, labels=JOB_LABELS)
        attempts = CounterMetricFamily(*ATTEMPTS, labels=(*JOB_LABELS, "outcome"))
        duration = HistogramMetricFamily(*DURATION, labels=JOB_LABELS, unit="seconds")
        wait = HistogramMetricFamily(*QUEUE_WAIT, labels=JOB_LABELS, unit="seconds")
        in_progress = GaugeMetricFamily(*IN_PROGRESS, labels=JOB_LABELS)
        for queue, job_name, n_enqueued, n_dedup, outcomes, running, took, waited in snapshot:
            labels = (queue, job_name)
            enqueued.add_metric(labels, n_enqueued)
            if n_dedup:  # only pairs that have unique jobs carry the series
                deduplicated.add_metric(labels, n_dedup)
            for outcome, n in outcomes.items():
                attempts.add_metric((*labels, outcome), n)
            duration.add_metric(labels, _buckets(self._duration_les, took), took.total)
            wait.add_metric(labels, _buckets(self._wait_les, waited), waited.total)
            in_progress.add_metric(labels, running)
        yield from (enqueued, deduplicated, attempts, duration, wait, in_progress)
        yield GaugeMetricFamily(*CAPACITY, value=capacity)
        yield CounterMetricFamily(*TELEMETRY_ERRORS, value=telemetry_errors)


def _copy(histogram: _Histogram) -> _Histogram:
    copy = _Histogram(0)
    copy.counts = list(histogram.counts)
    copy.exemplars = list(histogram.exemplars)
    copy.total = histogram.total
    return copy


def _les(bounds: Sequence[float]) -> tuple[str, ...]:
    return tuple(
        floatToGoString(bound)  # type: ignore[no-untyped-call]
        for bound in (*bounds, float("inf"))
    )


def _buckets(
    les: Sequence[str], histogram: _Histogram
) -> list[tuple[str, float] | tuple[str, float, Exemplar]]:
    out: list[tuple[str, float] | tuple[str, float, Exemplar]] = []
    cumulative = 0
    for le, count, exemplar in zip(les, histogram.counts, histogram.exemplars, strict=True):
        cumulative += count
        if exemplar is None:
            out.append((le, cumulative))
        else:
            span, value, at = exemplar
            out.append((le, cumulative, Exemplar(exemplar_labels(span), value, at)))
    return out


# -- the --processes child backend ------------------------------------------------------------
class ClientFamilies:
    """prometheus_client metric objects: in a multiprocess child their values go to the
    shared directory."""

    def __init__(self, registry: CollectorRegistry, config: PrometheusConfig) -> None:
        self.enqueued = Counter(*ENQUEUED, JOB_LABELS, registry=registry)
        self.deduplicated = Counter(*DEDUPLICATED, JOB_LABELS, registry=registry)
        self.attempts = Counter(*ATTEMPTS, (*JOB_LABELS, "outcome"), registry=registry)
        self.duration = Histogram(
            *DURATION,
            JOB_LABELS,
            buckets=config.duration_buckets,
            unit="seconds",
            registry=registry,
        )
        self.queue_wait = Histogram(
            *QUEUE_WAIT,
            JOB_LABELS,
            buckets=config.queue_wait_buckets,
            unit="seconds",
            registry=registry,
        )
        # livesum: a child that exits (even killed) takes its running jobs and slots with it.
        self.in_progress = Gauge(
            *IN_PROGRESS, JOB_LABELS, multiprocess_mode="livesum", registry=registry
        )
        self.capacity = Gauge(*CAPACITY, multiprocess_mode="livesum", registry=registry)
        self.telemetry_errors = Counter(*TELEMETRY_ERRORS, registry=registry)
        self.collectors = (
            self.enqueued,
            self.deduplicated,
            self.attempts,
            self.duration,
            self.queue_wait,
            self.in_progress,
            self.capacity,
            self.telemetry_errors,
        )

    def series(self, queue: str, job_name: str) -> ClientSeries:
        return ClientSeries(self, queue, job_name)

    def add_capacity(self, slots: int) -> None:
        self.capacity.inc(slots)

    def count_telemetry_error(self) -> None:
        self.telemetry_errors.inc()


class ClientSeries:
    """The labelled children of one pair, looked up once: by labels on every attempt they
    would cost more than the observations."""

    __slots__ = (
        "_attempts",
        "_duration",
        "_enqueued",
        "_families",
        "_in_progress",
        "_labels",
        "_queue_wait",
    )

    def __init__(self, families: ClientFamilies, queue: str, job_name: str) -> None:
        self._enqueued = families.enqueued.labels(queue, job_name)
        self._families, self._labels = families, (queue, job_name)
        self._attempts = {
            outcome: families.attempts.labels(queue, job_name, outcome) for outcome in OUTCOMES
        }
        self._duration = families.duration.labels(queue, job_name)
        self._queue_wait = families.queue_wait.labels(queue, job_name)
        self._in_progress = families.in_progress.labels(queue, job_name)

    def begin(self, queue_wait_s: float, exemplar: ExemplarSpan | None) -> None:
        # A multiprocess child's files hold no exemplars: its layer passes None.
        self._queue_wait.observe(queue_wait_s, _labels(exemplar))
        self._in_progress.inc()

    def end(self, outcome: str | None, seconds: float, exemplar: ExemplarSpan | None) -> None:
        self._in_progress.dec()
        if outcome is not None:
            self._duration.observe(seconds, _labels(exemplar))
            self._attempts[outcome].inc()

    def enqueued(self, n: int) -> None:
        self._enqueued.inc(n)

    def deduplicated(self, n: int) -> None:
        # Looked up when first needed: pairs without unique jobs carry no such series.
        self._families.deduplicated.labels(*self._labels).inc(n)


def _labels(span: ExemplarSpan | None) -> dict[str, str] | None:
    return None if span is None else exemplar_labels(span)


# -- bounded labels: the rule every instrumentation shares (soniq.instrumentation) -----------
class SeriesCache:
    """(queue, job name) as found on a job -> its Series, with both labels bounded."""

    def __init__(
        self,
        make: Callable[[str, str], Series],
        config: PrometheusConfig,
        known_job: Callable[[str], bool],
    ) -> None:
        self._make = make
        self.queues = BoundedLabel(config.max_queues, config.overflow_label)
        self.job_names = BoundedLabel(config.max_job_names, config.overflow_label, known_job)
        self._overflow = config.overflow_label
        self._by_raw: dict[tuple[str, str], Series] = {}
        self._by_label: dict[tuple[str, str], Series] = {}
        self._lock = threading.Lock()

    def get(self, queue: str, job_name: str) -> Series:
        series = self._by_raw.get((queue, job_name))
        if series is not None:
            return series
        with self._lock:  # rare: a pair seen for the first time (enqueues may be threaded)
            key = (self.queues(queue), self.job_names(job_name))
            series = self._by_label.get(key)
            if series is None:
                series = self._by_label[key] = self._make(*key)
            if self._overflow not in key:
                # Only bounded keys are remembered by their raw value, so unknown names
                # cannot grow this dict without limit.
                self._by_raw[(queue, job_name)] = series
        return series
