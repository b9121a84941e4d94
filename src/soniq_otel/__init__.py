"""OpenTelemetry tracing for Soniq: ``app.instrument(otel=True)`` or ``otel=OtelConfig(...)``.

Spans: ``send <job name>`` (PRODUCER, one per enqueue or batch) and ``process <job name>``
(CONSUMER, one per attempt). docs/tracing.md describes every name, attribute and link.
Needs the ``otel`` extra (opentelemetry-sdk and the OTLP exporters).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

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
    """Add the tracing layer to ``app`` (what ``app.instrument(otel=...)`` calls).

    Installing again with no config changes nothing; with a different config, it replaces the
    layer in place (as ``soniq.logs`` does).
    """
    if isinstance(config, Mapping):
        config = OtelConfig(**config)
    elif config is not None and not isinstance(config, OtelConfig):
        raise TypeError(
            f"otel= takes True, a soniq_otel.OtelConfig or a dict of its options, not {config!r}"
        )
    for layer in app.middleware:
        if isinstance(layer, TracingMiddleware):
            if config is None or config == layer.config:
                return layer
            replacement = TracingMiddleware(config)
            app.middleware.replace(TracingMiddleware, replacement)
            return replacement
    layer = TracingMiddleware(config)
    app.middleware.add_builtin(layer)
    return layer
