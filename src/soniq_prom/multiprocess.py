"""One endpoint for N worker processes (``soniq worker --processes N --metrics-port P``).

prometheus_client's multiprocess mode does the hard part: each child writes its values to
memory-mapped files in a directory the parent creates, and the parent's scrape merges them,
so counters and histograms add up exactly, including the counts of children that have
exited. Gauges use ``livesum``: a child that is gone takes its running jobs and slots with
it. The parent also reports the queue state, once for the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from .config import PrometheusConfig

if TYPE_CHECKING:
    from soniq import Soniq

    from .exposition import MetricsServer
    from .queue_state import QueueStateCollector

logger = logging.getLogger("soniq")

T = TypeVar("T")

#: Set by the parent for its children: write metrics to PROMETHEUS_MULTIPROC_DIR, serve none.
CHILD_ENV = "SONIQ_PROM_CHILD"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def is_multiprocess_child() -> bool:
    return os.environ.get(CHILD_ENV) == "1" and bool(os.environ.get(MULTIPROC_DIR_ENV))


class _LoopThread:
    """An event loop of its own, for the parent's database work (the parent has no worker)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="soniq-prom-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class ProcessGroupExporter:
    """The parent's side: makes the shared directory, serves the merged metrics and the queue
    state on ``host:port``, and forgets the live gauges of children that exit."""

    def __init__(self, app: Soniq, host: str, port: int, config: Any = None) -> None:
        from .exposition import MetricsServer
        from .middleware import PrometheusMetrics
        from .queue_state import QueueStateCollector

        if config is None:
            # The app module may have called app.instrument(prometheus=PrometheusConfig(...)).
            for layer in app.middleware:
                if isinstance(layer, PrometheusMetrics):
                    config = layer.config
        cfg = PrometheusConfig.of(config)
        self.app = app
        self.directory = tempfile.mkdtemp(prefix="soniq-prom-")
        self.registry = CollectorRegistry()
        self.queue_state: QueueStateCollector | None = None
        self._loop: _LoopThread | None = None
        self.server: MetricsServer | None = None
        try:
            MultiProcessCollector(self.registry, path=self.directory)  # type: ignore[no-untyped-call]
            if cfg.queue_state:
                self._loop = _LoopThread()
                self.queue_state = QueueStateCollector(
                    app,
                    ttl=cfg.queue_state_ttl,
                    timeout=cfg.queue_state_timeout,
                    max_queues=cfg.max_queues,
                    overflow=cfg.overflow_label,
                    on_error=self._queue_state_failed,
                )
                self.queue_state.attach(self._loop.loop)
                self.registry.register(self.queue_state)
            self.server = MetricsServer(self.registry, host, port)
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def child_env(self) -> dict[str, str]:
        return {MULTIPROC_DIR_ENV: self.directory, CHILD_ENV: "1"}

    def process_exited(self, pid: int) -> None:
        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def _queue_state_failed(self, error: BaseException) -> None:
        logger.warning("Queue-state metrics failed: %r", error)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self._loop is not None:
            if self.queue_state is not None:
                with contextlib.suppress(Exception):
                    self._loop.run(self.queue_state.close(), 5)
            with contextlib.suppress(Exception):
                self._loop.run(self.app.close(), 10)
            self._loop.stop()
            self._loop = None
        shutil.rmtree(self.directory, ignore_errors=True)
