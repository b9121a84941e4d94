"""Structured logs for Soniq (the log middleware arrives with the logs work)."""

from __future__ import annotations

import logging
from typing import Any


def install(app: Any, config: Any = None) -> None:
    raise NotImplementedError("soniq.logs is not implemented yet")


def configure_logging(fmt: str, level: str) -> None:
    """Root logging for the CLI: readable text at a terminal, or one JSON object per line."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
