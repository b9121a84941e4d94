"""The observable queue gauges: jobs per queue and state, the oldest ready job's age, live
workers, read from PostgreSQL when the meter provider collects.

The read and its single reporter in a fleet are Soniq's Prometheus queue-state reader's
(``soniq_prom.queue_state``): one statement, its result reused for ``queue_state_interval``
seconds, reported only by the process that holds the advisory lock, so a sum over every
process counts each job once. When the Prometheus layer runs in the same app, its reader is
shared, so the two do not compete for the lock and one process reports both. The gauges
report nothing (never zeros) in a process that is not the reporter.

The collection runs on the meter reader's own thread; the reader hands the query to the
worker's event loop and waits at most its timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import attributes as A

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation

    from soniq.app import Soniq

    from .config import OtelConfig

logger = logging.getLogger("soniq.otel")

STATE: str = "soniq.job.state"
QUERY_TIMEOUT = 5.0

# (prometheus family name, attributes, value) as read; turned into observations per gauge.
_Sample = tuple[str, dict[str, str], float]


class QueueGauges:
    def __init__(
        self, app: Soniq, config: OtelConfig, on_error: Callable[[BaseException], None]
    ) -> None:
        self._app = app
        self._config = config
        self._on_error = on_error
        self._reader: Any = None
        self._own_reader = False
        self._samples: list[_Sample] = []
        self._read_at = -1.0
        self._lock = threading.Lock()

    def register(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "soniq.queue.jobs",
            callbacks=[self._observe_jobs],
            unit="{job}",
            description="Jobs in PostgreSQL per queue and soniq.job.state (ready, scheduled, "
            "processing, dead_letter). Reported by one process of the fleet.",
        )
        meter.create_observable_gauge(
            "soniq.queue.oldest_ready_age",
            callbacks=[self._observe_age],
            unit="s",
            description="Seconds the oldest ready job of the queue has been due without being "
            "claimed (0 when none is ready). Reported by one process of the fleet.",
        )
        meter.create_observable_gauge(
            "soniq.workers.live",
            callbacks=[self._observe_workers],
            unit="{worker}",
            description="Workers whose heartbeat is fresher than the lease. Reported by one "
            "process of the fleet.",
        )

    # -- the reader ----------------------------------------------------------------------------
    def attach(self, app: Soniq) -> None:
        """At worker start: find or make the reader, and run its queries on this loop."""
        import asyncio

        if self._reader is None:
            self._reader, self._own_reader = self._find_reader(app)
        if self._reader is not None and self._own_reader:
            self._reader.attach(asyncio.get_running_loop())

    def _find_reader(self, app: Soniq) -> tuple[Any, bool]:
        try:
            from soniq_prom import metrics_of
            from soniq_prom.queue_state import QueueStateCollector
        except ImportError:
            logger.warning(
                "Soniq metrics: the queue gauges need prometheus_client "
                "(pip install 'soniq[otel]'); they are not reported"
            )
            return None, False
        prom = metrics_of(app)
        if prom is not None and prom.queue_state is not None:
            return prom.queue_state, False
        cfg = self._config
        reader = QueueStateCollector(
            app,
            ttl=cfg.queue_state_interval,
            timeout=QUERY_TIMEOUT,
            max_queues=cfg.max_queues,
            overflow=cfg.overflow_label,
            on_error=self._on_error,
        )
        return reader, True

    async def close(self) -> None:
        """At the last worker's stop: give up the reporter role."""
        if self._reader is not None and self._own_reader:
            await self._reader.close()

    def _read(self) -> list[_Sample]:
        reader = self._reader
        if reader is None:
            return []
        with self._lock:
            # The three gauges are collected one after the other: one read serves them all.
            if time.monotonic() - self._read_at < 1.0:
                return self._samples
            samples: list[_Sample] = []
            for family in reader.collect():
                for sample in family.samples:
                    samples.append((family.name, dict(sample.labels), float(sample.value)))
            self._samples = samples
            self._read_at = time.monotonic()
            return samples

    # -- callbacks (on the meter reader's thread) --------------------------------------------
    def _observe_jobs(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(
                value, {A.MESSAGING_DESTINATION_NAME: labels["queue"], STATE: labels["state"]}
            )
            for name, labels, value in self._read()
            if name == "soniq_queue_jobs"
        ]

    def _observe_age(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(value, {A.MESSAGING_DESTINATION_NAME: labels["queue"]})
            for name, labels, value in self._read()
            if name.startswith("soniq_queue_oldest_ready_age")
        ]

    def _observe_workers(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        return [
            Observation(value) for name, _, value in self._read() if name == "soniq_workers_live"
        ]
