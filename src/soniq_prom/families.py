"""The per-process metric families, and the bounded labels that keep their series few."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .config import PrometheusConfig

OUTCOMES = ("done", "retry", "dead_letter")


class Families:
    """The metric objects of one process (one registry)."""

    def __init__(self, registry: CollectorRegistry, config: PrometheusConfig) -> None:
        job_labels = ("queue", "job_name")
        self.enqueued = Counter(
            "soniq_jobs_enqueued",
            "Jobs this process wrote to the queue (counted once the write returned).",
            job_labels,
            registry=registry,
        )
        self.attempts = Counter(
            "soniq_job_attempts",
            "Job attempts finished, by outcome: done, retry (failed, will run again) or "
            "dead_letter (failed for the last time).",
            (*job_labels, "outcome"),
            registry=registry,
        )
        self.duration = Histogram(
            "soniq_job_duration_seconds",
            "Seconds the job function ran, per attempt.",
            job_labels,
            buckets=config.duration_buckets,
            unit="seconds",
            registry=registry,
        )
        self.queue_wait = Histogram(
            "soniq_job_queue_wait_seconds",
            "Seconds an attempt waited between becoming due and being claimed, on the "
            "database clock (a deliberate delay or retry backoff is not waiting).",
            job_labels,
            buckets=config.queue_wait_buckets,
            unit="seconds",
            registry=registry,
        )
        # livesum: a process that exits takes its running jobs and slots with it.
        self.in_progress = Gauge(
            "soniq_jobs_in_progress",
            "Job attempts running now.",
            job_labels,
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.capacity = Gauge(
            "soniq_worker_capacity",
            "Job slots of the running workers (their concurrency), summed.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.telemetry_errors = Counter(
            "soniq_telemetry_errors",
            "Errors raised inside telemetry (tracing, logs, metrics); jobs were not failed by "
            "them.",
            registry=registry,
        )


class Series:
    """The labelled children of one (queue, job name) pair, made once and reused: looking a
    child up by its labels on every attempt costs more than the observation itself."""

    __slots__ = ("attempts", "duration", "enqueued", "in_progress", "queue_wait")

    def __init__(self, families: Families, queue: str, job_name: str) -> None:
        self.enqueued = families.enqueued.labels(queue, job_name)
        self.attempts = {
            outcome: families.attempts.labels(queue, job_name, outcome) for outcome in OUTCOMES
        }
        self.duration = families.duration.labels(queue, job_name)
        self.queue_wait = families.queue_wait.labels(queue, job_name)
        self.in_progress = families.in_progress.labels(queue, job_name)


class BoundedLabel:
    """Maps raw values (queue names, job names) to label values, at most ``cap`` distinct
    ones; a value past the cap, or one ``allowed`` rejects, becomes ``overflow``."""

    def __init__(
        self, cap: int, overflow: str, allowed: Callable[[str], bool] | None = None
    ) -> None:
        self._cap = cap
        self._overflow = overflow
        self._allowed = allowed
        self._accepted: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._accepted:
            return value
        if (
            len(self._accepted) >= self._cap
            or value == self._overflow
            or (self._allowed is not None and not self._allowed(value))
        ):
            # Not remembered: a name registered later may still get its own series.
            return self._overflow
        self._accepted.add(value)
        return value

    @property
    def accepted(self) -> frozenset[str]:
        return frozenset(self._accepted)


class SeriesCache:
    """(queue, job name) as found on a job -> its Series, with both labels bounded."""

    def __init__(
        self,
        families: Families,
        config: PrometheusConfig,
        known_job: Callable[[str], bool],
    ) -> None:
        self._families = families
        self.queues = BoundedLabel(config.max_queues, config.overflow_label)
        self.job_names = BoundedLabel(config.max_job_names, config.overflow_label, known_job)
        self._overflow = config.overflow_label
        self._by_raw: dict[tuple[str, str], Series] = {}
        self._by_label: dict[tuple[str, str], Series] = {}

    def get(self, queue: str, job_name: str) -> Series:
        series = self._by_raw.get((queue, job_name))
        if series is not None:
            return series
        key = (self.queues(queue), self.job_names(job_name))
        series = self._by_label.get(key)
        if series is None:
            series = self._by_label[key] = Series(self._families, *key)
        if self._overflow not in key:
            # Only bounded keys are remembered by their raw value, so unknown names cannot
            # grow this dict without limit.
            self._by_raw[(queue, job_name)] = series
        return series

