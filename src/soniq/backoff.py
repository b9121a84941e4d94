"""Retry delays: exponential, capped, with jitter so a burst of failures does not retry in step."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import ConfigurationError


@dataclass(frozen=True)
class Backoff:
    """Delay before attempt ``n + 1`` after attempt ``n`` failed.

    ``base * factor ** (n - 1)``, capped at ``max_delay``, then scaled by a random factor in
    ``[1 - jitter, 1]``.
    """

    base: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.base < 0 or self.max_delay < 0:
            raise ConfigurationError("Backoff base and max_delay must be >= 0 seconds")
        if self.factor < 1:
            raise ConfigurationError("Backoff factor must be >= 1 (1 means a fixed delay)")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("Backoff jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        raw = min(self.max_delay, self.base * self.factor ** max(0, attempt - 1))
        return raw * (1 - self.jitter * random.random())


DEFAULT_BACKOFF = Backoff()


def as_backoff(value: Backoff | float | int | None) -> Backoff:
    """Accept a Backoff, a fixed number of seconds, or None for the default."""
    if value is None:
        return DEFAULT_BACKOFF
    if isinstance(value, Backoff):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Backoff(base=float(value), factor=1.0, max_delay=float(value), jitter=0.0)
    raise ConfigurationError(
        f"retry_backoff must be a soniq.Backoff or a number of seconds, not {value!r}"
    )
