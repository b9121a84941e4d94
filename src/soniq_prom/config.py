"""What the metrics layer can be told: buckets, label caps, the queue-state cache."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from prometheus_client import CollectorRegistry

# Seconds, from a 5 ms job to an hour-long one: queue jobs span that whole range, and a
# histogram is only useful where it has buckets.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)

OVERFLOW_LABEL = "__other__"


@dataclass(frozen=True)
class PrometheusConfig:
    """Settings for ``app.instrument(prometheus=PrometheusConfig(...))``.

    ``registry``: where the metrics are registered; by default each app gets its own, so two
    apps in one process never collide. Pass ``prometheus_client.REGISTRY`` to expose them
    through an endpoint you already serve.
    """

    duration_buckets: Sequence[float] = DEFAULT_BUCKETS
    queue_wait_buckets: Sequence[float] = DEFAULT_BUCKETS
    #: Distinct job names with their own series; more fall into ``overflow_label``.
    max_job_names: int = 100
    #: Distinct queues with their own series; more fall into ``overflow_label``.
    max_queues: int = 50
    overflow_label: str = OVERFLOW_LABEL
    #: Report queue-state gauges from PostgreSQL (if this process is the fleet's reporter).
    queue_state: bool = True
    #: Seconds one queue-state query result is reused for, however many scrapes come.
    queue_state_ttl: float = 5.0
    #: Seconds a scrape waits for the queue-state query before showing the last result.
    queue_state_timeout: float = 5.0
    #: Attach the current (sampled) trace id to duration and wait observations.
    exemplars: bool = True
    registry: CollectorRegistry | None = None

    def __post_init__(self) -> None:
        for name in ("duration_buckets", "queue_wait_buckets"):
            buckets = tuple(float(b) for b in getattr(self, name))
            if not buckets or any(not (b > 0 and math.isfinite(b)) for b in buckets):
                raise ValueError(f"{name} must be positive, finite numbers of seconds")
            if list(buckets) != sorted(set(buckets)):
                raise ValueError(f"{name} must be strictly increasing, got {buckets}")
            object.__setattr__(self, name, buckets)
        for name in ("max_job_names", "max_queues"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if not isinstance(self.overflow_label, str) or not self.overflow_label:
            raise ValueError("overflow_label must be a non-empty string")
        if not self.queue_state_ttl >= 0:
            raise ValueError("queue_state_ttl must be >= 0 seconds")
        if not self.queue_state_timeout > 0:
            raise ValueError("queue_state_timeout must be > 0 seconds")

    @classmethod
    def of(cls, config: Any) -> PrometheusConfig:
        """Accept None (defaults), a PrometheusConfig, or a mapping of its fields."""
        if config is None or config is True:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(config) - known)
            if unknown:
                raise TypeError(
                    f"Unknown Prometheus setting(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
            return cls(**config)
        raise TypeError(
            f"prometheus= takes True, a soniq_prom.PrometheusConfig or a dict, not {config!r}"
        )
