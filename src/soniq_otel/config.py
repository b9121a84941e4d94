"""What a user can set for OpenTelemetry: ``app.instrument(otel=OtelConfig(...))``."""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from soniq.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from soniq.registry import TraceParent

# The SDK's own switches for the two signals (``otlp``, ``console``, ``none``). When set, they
# win over the config's ``metrics`` / ``logs`` default, as they do over the SDK's: an operator
# turns a signal on or off without a code change.
METRICS_EXPORTER_ENV = "OTEL_METRICS_EXPORTER"
LOGS_EXPORTER_ENV = "OTEL_LOGS_EXPORTER"


@dataclass(frozen=True)
class OtelConfig:
    """Options of Soniq's OpenTelemetry layers.

    ``traces``, ``metrics``, ``logs``: which signals to send. Metrics and logs are off unless
    turned on here or by ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER`` (``otlp`` on,
    ``none`` off; a set variable wins over the value here).
    ``tracer_provider``, ``meter_provider``, ``logger_provider``: the providers to use;
    default: the global one if the application set one, else one built from the ``OTEL_*``
    environment variables with OTLP exporters (then made global).
    ``trace_parent``: how an attempt relates to the span of the enqueue that made its job, for
    jobs that do not say (``@app.job(trace_parent=...)``): ``child`` (child and link), ``link``
    (link only, own trace) or ``none`` (neither).
    ``max_parent_age``: seconds since the enqueue (database clock) after which ``child`` becomes
    ``link``, so one trace does not stretch over hours or days.
    ``record_args``: job arguments as ``soniq.job.args.<name>`` attributes: False (default),
    True for all, or the names of the ones to record.
    ``flush_timeout``: seconds a stopping worker (and, for a provider Soniq built, the process
    at exit) waits for spans, metrics and log records to be exported.
    ``service_name``: ``service.name`` of a provider Soniq builds, when neither
    ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` gives one.
    ``max_queues``, ``max_job_names``, ``overflow_label``: as for Prometheus, the queues and job
    names that get attribute values of their own; the rest (and job names the app has not
    registered) share ``overflow_label``.
    ``queue_state_interval``: seconds a read of the queue gauges is reused.
    ``freeze_gc_at_start``: when a worker starts with tracing on, move the objects made so far
    out of the garbage collector's reach (``gc.freeze()``), so the full collections that spans
    waiting for export bring about do not walk them again and again (docs/tracing.md).
    """

    traces: bool = True
    metrics: bool = False
    logs: bool = False
    tracer_provider: TracerProvider | None = None
    meter_provider: Any = None
    logger_provider: Any = None
    trace_parent: TraceParent = "child"
    max_parent_age: float = 3600.0
    record_args: bool | Collection[str] = False
    flush_timeout: float = 5.0
    service_name: str = "soniq"
    max_queues: int = 50
    max_job_names: int = 100
    overflow_label: str = "__other__"
    queue_state_interval: float = 5.0
    freeze_gc_at_start: bool = True

    def __post_init__(self) -> None:
        for flag in ("traces", "metrics", "logs", "freeze_gc_at_start"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigurationError(
                    f"OtelConfig.{flag} must be True or False, not {getattr(self, flag)!r}"
                )
        if self.trace_parent not in ("child", "link", "none"):
            raise ConfigurationError(
                f"OtelConfig.trace_parent must be 'child', 'link' or 'none', "
                f"not {self.trace_parent!r}"
            )
        for name in ("max_parent_age", "flush_timeout", "queue_state_interval"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or math.isnan(value)
                or value < 0
            ):
                raise ConfigurationError(
                    f"OtelConfig.{name} must be a number of seconds >= 0, not {value!r}"
                )
        if isinstance(self.record_args, str) or not (
            isinstance(self.record_args, bool) or all(isinstance(n, str) for n in self.record_args)
        ):
            raise ConfigurationError(
                "OtelConfig.record_args must be True, False or a collection of argument names, "
                f"not {self.record_args!r}"
            )
        if not isinstance(self.service_name, str) or not self.service_name:
            raise ConfigurationError(
                f"OtelConfig.service_name must be a non-empty string, not {self.service_name!r}"
            )
        for cap in ("max_queues", "max_job_names"):
            value = getattr(self, cap)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"OtelConfig.{cap} must be a whole number >= 1, not {value!r}"
                )
        if not isinstance(self.overflow_label, str) or not self.overflow_label:
            raise ConfigurationError(
                f"OtelConfig.overflow_label must be a non-empty string, not {self.overflow_label!r}"
            )

    @property
    def metrics_on(self) -> bool:
        """``metrics``, unless ``OTEL_METRICS_EXPORTER`` says otherwise."""
        return _switch(METRICS_EXPORTER_ENV, self.metrics)

    @property
    def logs_on(self) -> bool:
        """``logs``, unless ``OTEL_LOGS_EXPORTER`` says otherwise."""
        return _switch(LOGS_EXPORTER_ENV, self.logs)


def _switch(variable: str, default: bool) -> bool:
    raw = os.environ.get(variable, "").strip().lower()
    if not raw:
        return default
    names = [n.strip() for n in raw.split(",") if n.strip()]
    return any(n != "none" for n in names)
