"""OpenTelemetry tracing for Soniq: ``app.instrument(otel=True)`` or ``otel=OtelConfig(...)``.

Spans: ``send <job name>`` (PRODUCER, one per enqueue or batch) and ``process <job name>``
(CONSUMER, one per attempt). docs/tracing.md describes every name, attribute and link.
Needs the ``otel`` extra (opentelemetry-sdk and the OTLP exporters).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from soniq.errors import ConfigurationError

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

logger = logging.getLogger("soniq.otel")


def install(app: Soniq, config: OtelConfig | Mapping[str, Any] | None = None) -> TracingMiddleware:
    """Add the tracing layer to ``app`` (idempotent: a second call keeps the first layer)."""
    if isinstance(config, Mapping):
        config = OtelConfig(**config)
    elif config is not None and not isinstance(config, OtelConfig):
        raise ConfigurationError(
            f"app.instrument(otel=...) takes True, a soniq_otel.OtelConfig or a dict of its "
            f"options, not {config!r}"
        )
    for layer in app.middleware:
        if isinstance(layer, TracingMiddleware):
            if config is not None and config != layer.config:
                logger.warning(
                    "Tracing is already on for this app with %r; the new options are ignored",
                    layer.config,
                )
            return layer
    layer = TracingMiddleware(config)
    app.middleware.add_builtin(layer)
    return layer
