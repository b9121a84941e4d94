"""SIGTERM/SIGINT for a worker run in the main thread: the first stops it gracefully (running
jobs get the grace period), a second exits at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .worker import Worker

logger = logging.getLogger("soniq")


class StopOnSignal:
    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._installed: list[int] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
                self._installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass  # not the main thread, or not supported: the caller stops us

    def restore(self) -> None:
        if not self._installed:
            return
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        self._installed.clear()

    def _on_signal(self, sig: int) -> None:
        if self._worker.stopping:
            logger.warning("Second %s: exiting at once", signal.Signals(sig).name)
            os._exit(128 + sig)
        logger.info(
            "%s received: finishing running jobs (grace %.3gs)",
            signal.Signals(sig).name,
            self._worker.grace_period,
        )
        self._worker.stop()
