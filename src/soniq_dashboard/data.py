"""The rows the pages show, gathered from the app's public API in as few statements as a page
needs, none of which counts the whole table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from soniq import Soniq

_STATES = ("ready", "scheduled", "processing", "dead_letter")


async def queue_rows(app: Soniq) -> list[dict[str, Any]]:
    """One row per queue: live counts by state, the oldest ready job's age, paused and limit
    (from the queue controls)."""
    state = await app.queue_state()
    rows: dict[str, dict[str, Any]] = defaultdict(
        lambda: (
            dict.fromkeys(_STATES, 0) | {"oldest_ready_age_s": None, "paused": False, "limit": None}
        )
    )
    for count in state.counts:
        row = rows[count.queue]
        row[count.state] = count.jobs
        if count.oldest_ready_age_s is not None:
            row["oldest_ready_age_s"] = count.oldest_ready_age_s
    for control in await app.queues():
        row = rows[control.name]
        row["paused"] = control.paused
        row["limit"] = control.concurrency
    return [{"queue": name, **row} for name, row in sorted(rows.items())]


def per_queue_minute(stats: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for s in stats:
        out[s["queue"]] += s["per_minute"]
    return dict(out)


def with_rates(rows: list[dict[str, Any]], per_minute: dict[str, float]) -> list[dict[str, Any]]:
    """The queue rows with the jobs each did per minute over the last hour."""
    return [{**row, "per_minute": per_minute.get(row["queue"], 0.0)} for row in rows]
