"""OpenTelemetry tracing for Soniq: ``app.instrument(otel=True)`` or ``otel=OtelConfig(...)``.

Spans: ``send <job name>`` (PRODUCER, one per enqueue or batch) and ``process <job name>``
(CONSUMER, one per attempt). docs/tracing.md describes every name, attribute and link.
Needs the ``otel`` extra (opentelemetry-sdk and the OTLP exporters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.instrumentation import config_from, install_layer

from . import attributes
from .attributes import PREVIOUS_ATTEMPT_KEY
from .config import OtelConfig
from .middleware import TracingMiddleware
from .provider import build_tracer_provider

if TYPE_CHECKING:
    from soniq.app import Soniq

__all__ = [
    "PREVIOUS_ATTEMPT_KEY",
    "OtelConfig",
    "TracingMiddleware",
    "attributes",
    "build_tracer_provider",
    "install",
]


def install(app: Soniq, config: OtelConfig | Mapping[str, Any] | None = None) -> TracingMiddleware:
    """Add the tracing layer to ``app`` (what ``app.instrument(otel=...)`` calls, found through
    the ``soniq.instrumentations`` entry point ``otel``); returns the layer in the chain.

    Installing again with no config, or an equal one, changes nothing; a different config
    replaces the layer in place, refused while a worker of the app runs (the rule of
    :func:`soniq.instrumentation.install_layer`, shared by every instrumentation).
    """
    wanted = config_from(OtelConfig, config, "otel")
    return install_layer(
        app, TracingMiddleware, wanted, TracingMiddleware, config_of=lambda layer: layer.config
    )
