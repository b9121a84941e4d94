"""Prometheus metrics for Soniq (filled in by the metrics work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, config: Any = None) -> None:
    raise NotImplementedError("soniq_prom is not implemented yet")
