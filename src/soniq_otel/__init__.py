"""OpenTelemetry tracing for Soniq (filled in by the tracing work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, config: Any = None) -> None:
    raise NotImplementedError("soniq_otel is not implemented yet")
