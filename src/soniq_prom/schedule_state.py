"""Schedule gauges and counters read from PostgreSQL, by the process that reports queue state.

Fires are counted in the schedule's row, in the fire's own transaction, so the numbers are
exact whichever worker fired and survive restarts; reading them from the database in one
process of the fleet (the queue-state reporter) means ``sum()`` counts each fire once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from soniq.schedules import ScheduleState

RESULTS = ("fired", "skipped_overlap", "missed")

_FIRES_HELP = (
    "Fire times of each schedule by result: fired (a job was written), skipped_overlap (its "
    "previous job was still queued or running, overlap=False), missed (passed while no worker "
    "ran it, not run under the schedule's missed= policy). Reported by one process of the fleet."
)
_LAST_HELP = "Unix time of the schedule's latest fire time. Reported by one process of the fleet."
_NEXT_HELP = (
    "Unix time of the schedule's next fire time (absent while paused); in the past means the "
    "schedule is late. Reported by one process of the fleet."
)


def schedule_families(states: Iterable[ScheduleState] | None) -> Iterator[Metric]:
    """The families; ``states`` None (not the reporter) yields them without samples."""
    fires = CounterMetricFamily("soniq_schedule_fires", _FIRES_HELP, labels=("schedule", "result"))
    last = GaugeMetricFamily(
        "soniq_schedule_last_fire_timestamp_seconds", _LAST_HELP, labels=("schedule",)
    )
    nxt = GaugeMetricFamily(
        "soniq_schedule_next_fire_timestamp_seconds", _NEXT_HELP, labels=("schedule",)
    )
    for state in states or ():
        counts = {
            "fired": state.fired,
            "skipped_overlap": state.skipped_overlap,
            "missed": state.missed,
        }
        for result in RESULTS:
            fires.add_metric((state.name, result), float(counts[result]))
        if state.last_fire_time is not None:
            last.add_metric((state.name,), state.last_fire_time)
        if state.next_fire_time is not None:
            nxt.add_metric((state.name,), state.next_fire_time)
    yield fires
    yield last
    yield nxt
