"""Prometheus metrics for Soniq: ``app.instrument(prometheus=True)``.

Per process: enqueues, attempts by outcome, duration and queue-wait histograms (with trace
exemplars), jobs in progress, worker capacity, telemetry errors. From PostgreSQL, reported by
one process of the fleet: jobs per queue and state, the oldest ready job's age, live workers.
Served by the worker on ``metrics_port``, by :func:`asgi_app` in a web app, or rendered for any
framework by :func:`render`. See docs/metrics.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import prometheus_client  # noqa: F401
except ImportError as exc:  # pragma: no cover - the dev install always has it
    raise ImportError(
        "Soniq's Prometheus metrics need prometheus_client: pip install 'soniq[prometheus]'"
    ) from exc

from .config import DEFAULT_BUCKETS, OVERFLOW_LABEL, PrometheusConfig
from .exposition import Exposition, MetricsServer, asgi_app, render, render_async
from .middleware import PrometheusMetrics
from .multiprocess import ProcessGroupExporter

if TYPE_CHECKING:
    from soniq import Soniq

__all__ = [
    "DEFAULT_BUCKETS",
    "OVERFLOW_LABEL",
    "Exposition",
    "MetricsServer",
    "ProcessGroupExporter",
    "PrometheusConfig",
    "PrometheusMetrics",
    "asgi_app",
    "install",
    "metrics_of",
    "render",
    "render_async",
]


def install(app: Soniq, config: PrometheusConfig | Any = None) -> PrometheusMetrics:
    """Add the metrics layer to ``app`` (what ``app.instrument(prometheus=...)`` calls).

    Installing again with no config, or the same one, changes nothing; with a different
    config, a new layer (with new, zeroed metrics) replaces the old one in place, as the
    tracing and log layers do. That is refused once a worker runs with the old one.
    """
    wanted = PrometheusConfig.of(config)
    existing = metrics_of(app)
    if existing is not None:
        if config is None or config is True or wanted == existing.config:
            return existing
        existing.unregister()
        layer = PrometheusMetrics(app, wanted)
        app.middleware.replace(PrometheusMetrics, layer)
        listeners = app.middleware.telemetry_error_listeners
        listeners[listeners.index(existing.count_telemetry_error)] = layer.count_telemetry_error
        return layer
    layer = PrometheusMetrics(app, wanted)
    app.middleware.add_builtin(layer)
    app.middleware.telemetry_error_listeners.append(layer.count_telemetry_error)
    return layer


def metrics_of(app: Soniq) -> PrometheusMetrics | None:
    """The metrics layer installed on ``app``, if any."""
    for layer in app.middleware:
        if isinstance(layer, PrometheusMetrics):
            return layer
    return None
