"""How many jobs a worker claims ahead of its free slots (prefetch), from what it measures.

A worker that runs fast jobs would wait on the database once per round trip if it claimed only
for its free slots; one that runs slow jobs would hoard the queue if it claimed much more. So it
claims ahead three round trips' worth of starts: its start rate times its round-trip time,
both moving averages, capped by the ``prefetch`` setting. Pure arithmetic, no I/O.
"""

from __future__ import annotations

import math


class ClaimAhead:
    """Moving averages of the start rate, the round-trip time and the share of jobs whose start
    must be written before they run; :meth:`ahead` turns them into a count."""

    __slots__ = (
        "_from",
        "_since",
        "_started",
        "prefetch",
        "start_rate",
        "trip_time",
        "written_first",
    )

    def __init__(self, prefetch: int) -> None:
        self.prefetch = prefetch
        # Jobs started per second and round-trip seconds: how many jobs the worker gets through
        # while one round trip is out.
        self.start_rate = 0.0
        self.trip_time = 0.0
        # Share of started jobs that were on their last attempt or suspect: those start only
        # after a round trip writes their start, so claiming them ahead gains nothing and costs
        # them a round trip of waiting; the worker claims that much less ahead.
        self.written_first = 0.0
        self._started = 0
        self._since = 0.0  # loop time and start count the rate is measured from
        self._from = 0

    def started(self, written_first: bool) -> None:
        """A job started (``written_first``: one that waited for its start to be written)."""
        self._started += 1
        self.written_first += 0.05 * (written_first - self.written_first)

    def round_trip(self, sent_at: float, now: float) -> None:
        """A round trip sent at ``sent_at`` came back at ``now`` (loop time): update the
        round-trip time, and the start rate since the last round trip."""
        self.trip_time += 0.3 * (now - sent_at - self.trip_time)
        if now > self._since:
            rate = (self._started - self._from) / (now - self._since)
            self.start_rate += 0.3 * (rate - self.start_rate)
        self._since, self._from = now, self._started

    def ahead(self) -> int:
        """Jobs to hold claimed ahead: enough that fast jobs never wait on the database (and it
        grows from nothing: a worker that runs through what it has doubles its rate), while
        slow jobs leave the rest of the queue to other workers."""
        return min(
            self.prefetch,
            math.ceil(3 * self.start_rate * self.trip_time * (1.0 - self.written_first)),
        )
