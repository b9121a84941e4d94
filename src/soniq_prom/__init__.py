"""Prometheus metrics for Soniq: ``app.instrument(prometheus=True)``.

Per process: enqueues, attempts by outcome, duration and queue-wait histograms (with trace
exemplars), jobs in progress, worker capacity, telemetry errors. From PostgreSQL, reported by
one process of the fleet: jobs per queue and state, the oldest ready job's age, live workers.
Served by the worker on ``metrics_port``, by :func:`asgi_app` in a web app, or rendered for any
framework by :func:`render`. See docs/metrics.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.instrumentation import config_from, install_layer, installed

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
    "serve_process_group",
]


def install(
    app: Soniq, config: PrometheusConfig | Mapping[str, Any] | None = None
) -> PrometheusMetrics:
    """Add the metrics layer to ``app`` (what ``app.instrument(prometheus=...)`` calls, found
    through the ``soniq.instrumentations`` entry point ``prometheus``); returns the layer.

    Installing again with no config, or an equal one, changes nothing; a different config
    replaces the layer in place (with new, zeroed metrics), refused while a worker of the app
    runs (the rule of :func:`soniq.instrumentation.install_layer`, shared by every
    instrumentation).
    """
    wanted = config_from(PrometheusConfig, config, "prometheus")
    listeners = app.middleware.telemetry_error_listeners

    def build(cfg: PrometheusConfig | None) -> PrometheusMetrics:
        layer = PrometheusMetrics(app, cfg)
        listeners.append(layer.count_telemetry_error)
        return layer

    def retire(old: PrometheusMetrics) -> None:
        old.unregister()  # its metrics leave the registry, so the new ones can take the names
        listeners.remove(old.count_telemetry_error)

    return install_layer(
        app,
        PrometheusMetrics,
        wanted,
        build,
        config_of=lambda layer: layer.config,
        retire=retire,
    )


def metrics_of(app: Soniq) -> PrometheusMetrics | None:
    """The metrics layer installed on ``app``, if any."""
    return installed(app, PrometheusMetrics)


def serve_process_group(app: Soniq, host: str, port: int) -> ProcessGroupExporter:
    """Serve the metrics of ``soniq worker --processes N`` from this (parent) process: what the
    CLI calls, through this package's ``prometheus`` entry point, when a metrics port is set."""
    return ProcessGroupExporter(app, host, port)
