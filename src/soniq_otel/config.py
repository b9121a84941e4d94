"""What a user can set for tracing: ``app.instrument(otel=OtelConfig(...))``."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from soniq.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from soniq.registry import TraceParent


@dataclass(frozen=True)
class OtelConfig:
    """Options of the tracing layer.

    ``tracer_provider``: the provider to use; default: the global one if the application set
    one, else one built from the ``OTEL_*`` environment variables (then made global).
    ``trace_parent``: how an attempt relates to the span of the enqueue that made its job, for
    jobs that do not say (``@app.job(trace_parent=...)``): ``child`` (child and link), ``link``
    (link only, own trace) or ``none`` (neither).
    ``max_parent_age``: seconds since the enqueue (database clock) after which ``child`` becomes
    ``link``, so one trace does not stretch over hours or days.
    ``record_args``: job arguments as ``soniq.job.args.<name>`` attributes: False (default),
    True for all, or the names of the ones to record.
    ``flush_timeout``: seconds a stopping worker (and, for a provider Soniq built, the process
    at exit) waits for spans to be exported.
    ``service_name``: ``service.name`` of a provider Soniq builds, when neither
    ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` gives one.
    """

    tracer_provider: TracerProvider | None = None
    trace_parent: TraceParent = "child"
    max_parent_age: float = 3600.0
    record_args: bool | Collection[str] = False
    flush_timeout: float = 5.0
    service_name: str = "soniq"

    def __post_init__(self) -> None:
        if self.trace_parent not in ("child", "link", "none"):
            raise ConfigurationError(
                f"OtelConfig.trace_parent must be 'child', 'link' or 'none', "
                f"not {self.trace_parent!r}"
            )
        for name in ("max_parent_age", "flush_timeout"):
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
