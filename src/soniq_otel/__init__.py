"""OpenTelemetry for Soniq: ``app.instrument(otel=True)`` or ``otel=OtelConfig(...)``.

Traces (on by default): ``send <job name>`` (PRODUCER, one per enqueue or batch) and
``process <job name>`` (CONSUMER, one per attempt); docs/tracing.md. Metrics under the messaging
semantic conventions (``metrics=True`` or ``OTEL_METRICS_EXPORTER=otlp``); docs/metrics.md.
Log records through the logs bridge (``logs=True`` or ``OTEL_LOGS_EXPORTER=otlp``);
docs/logs.md. Needs the ``otel`` extra (opentelemetry-sdk and the OTLP exporters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.instrumentation import config_from
from soniq.middleware import Middleware

from . import attributes
from .attributes import PREVIOUS_ATTEMPT_KEY
from .config import OtelConfig
from .logs import OtelLogHandler, OtelLogs
from .metrics import OtelMetrics
from .middleware import TracingMiddleware
from .provider import build_logger_provider, build_meter_provider, build_tracer_provider

if TYPE_CHECKING:
    from soniq.app import Soniq

__all__ = [
    "PREVIOUS_ATTEMPT_KEY",
    "OtelConfig",
    "OtelLogHandler",
    "OtelLogs",
    "OtelMetrics",
    "TracingMiddleware",
    "attributes",
    "build_logger_provider",
    "build_meter_provider",
    "build_tracer_provider",
    "install",
]

_LAYERS: tuple[type[Middleware], ...] = (TracingMiddleware, OtelMetrics, OtelLogs)


def install(app: Soniq, config: OtelConfig | Mapping[str, Any] | None = None) -> Middleware | None:
    """Add the OpenTelemetry layers ``config`` switches on to ``app`` (what
    ``app.instrument(otel=...)`` calls, found through the ``soniq.instrumentations`` entry
    point ``otel``); returns the first of them in the chain (the tracing layer, when traces
    are on), or None when every signal is off.

    Installing again with no config, or an equal one, changes nothing; a different config
    replaces the layers in place and removes those it switches off, refused while a worker of
    the app runs (the rule of :func:`soniq.instrumentation.install_layer`, here for up to three
    layers at once).
    """
    wanted_config = config_from(OtelConfig, config, "otel")
    installed = {type(layer): layer for layer in app.middleware if type(layer) in _LAYERS}
    if installed:
        current = next(iter(installed.values())).config  # type: ignore[attr-defined]
        if wanted_config is None or wanted_config == current:
            return next(iter(installed.values()))
        if app.workers:
            raise RuntimeError(
                f"{next(iter(installed.values()))!r} is in use by a running worker; change its "
                f"configuration before starting workers"
            )
    cfg = wanted_config if wanted_config is not None else OtelConfig()
    wanted: dict[type[Middleware], Middleware] = {}
    if cfg.traces:
        wanted[TracingMiddleware] = TracingMiddleware(cfg)
    if cfg.metrics_on:
        wanted[OtelMetrics] = OtelMetrics(app, cfg)
    if cfg.logs_on:
        wanted[OtelLogs] = OtelLogs(cfg)
        # Soniq's job events come from the log layer; the OTLP records sit beside its stream.
        from soniq.logs import LogMiddleware
        from soniq.logs import install as install_logs

        if LogMiddleware not in app.middleware:
            install_logs(app)
    for kind in _LAYERS:
        old, new = installed.get(kind), wanted.get(kind)
        if isinstance(old, OtelLogs):
            old.detach()
        if old is not None and new is not None:
            app.middleware.replace(kind, new)
        elif old is not None:
            app.middleware.remove(kind)
        elif new is not None:
            app.middleware.add_builtin(new)
        if isinstance(new, OtelLogs):
            new.attach()
    return next((layer for kind in _LAYERS if (layer := wanted.get(kind))), None)
