"""Retention: finished jobs are deleted once older than their state's setting
(``done_retention``, ``cancelled_retention``, ``dead_letter_retention``; 0 keeps them).

Workers call :func:`purge_expired` now and then; one worker of the fleet purges at a time
(sql_manage.PURGE_EXPIRED takes a transaction-level advisory lock, so the others skip at once), in
bounded batches, each its own short transaction, for at most ``budget`` seconds per call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .settings import Settings
from .store_admin import AdminStore

# Rows per state per statement: a batch deletes in well under a second.
PURGE_BATCH = 5000

# How often a worker tries (seconds); another worker holding the purge costs one statement.
PURGE_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class Purge:
    deleted: int
    batches: int
    held: bool  # False: another worker was purging


def enabled(settings: Settings) -> bool:
    return bool(
        settings.done_retention or settings.cancelled_retention or settings.dead_letter_retention
    )


async def purge_expired(
    admin: AdminStore, settings: Settings, *, budget: float = 5.0, batch: int = PURGE_BATCH
) -> Purge:
    """Delete expired finished jobs, batch after batch while batches come back full."""
    started = time.monotonic()
    deleted = batches = 0
    while True:
        purged = await admin.purge_expired(
            settings.done_retention,
            settings.cancelled_retention,
            settings.dead_letter_retention,
            batch,
        )
        if not purged.held:
            return Purge(deleted, batches, held=batches > 0)
        batches += 1
        deleted += purged.total
        full = max(purged.done, purged.cancelled, purged.dead_letter) >= batch
        if not full or time.monotonic() - started >= budget:
            return Purge(deleted, batches, held=True)
