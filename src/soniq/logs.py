"""Structured logs for Soniq (filled in by the logs work)."""

from __future__ import annotations

from typing import Any


def install(app: Any, config: Any = None) -> None:
    raise NotImplementedError("soniq.logs is not implemented yet")
