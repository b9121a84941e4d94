"""The public reads plugins build on: ``app.queue_state()`` (typed, cheap) and
``app.fleet_role(name)`` (one holder per fleet)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from soniq import FleetRole, QueueCount, QueueState, Soniq
from tests.support.waiting import running_worker, wait_until


async def test_queue_state_counts_jobs_per_queue_and_state_and_the_live_workers(
    app: Soniq, db: asyncpg.Connection[Any]
) -> None:
    @app.job(name="j")
    async def j() -> None:
        pass

    assert await app.queue_state() == QueueState(counts=(), workers_live=0)
    for _ in range(2):
        await app.enqueue("j", scheduled_at=-30)
    await app.enqueue("j", scheduled_at=3600)
    dead = await app.enqueue("j", queue="other")
    await db.execute("UPDATE soniq_jobs SET status = 'dead_letter' WHERE id = $1", dead)

    state = await app.queue_state()
    assert isinstance(state, QueueState) and state.workers_live == 0
    counts = {(c.queue, c.state): c for c in state.counts}
    assert {k: c.jobs for k, c in counts.items()} == {
        ("default", "ready"): 2,
        ("default", "scheduled"): 1,
        ("other", "dead_letter"): 1,
    }
    ready = counts[("default", "ready")]
    assert isinstance(ready, QueueCount)
    assert ready.oldest_ready_age_s is not None and 29 < ready.oldest_ready_age_s < 120
    assert counts[("default", "scheduled")].oldest_ready_age_s is None

    async with running_worker(app, queues=["nothing-here"]):

        async def one_live() -> bool:
            return (await app.queue_state()).workers_live == 1

        await wait_until(one_live, timeout=10, what="the worker to count as live")


@pytest.fixture
async def two_apps(clean_db: str) -> AsyncIterator[tuple[Soniq, Soniq]]:
    first, second = Soniq(clean_db), Soniq(clean_db)
    yield first, second
    await first.close()
    await second.close()


async def test_a_fleet_role_has_one_holder_and_passes_on_when_released_or_cut(
    two_apps: tuple[Soniq, Soniq], db: asyncpg.Connection[Any]
) -> None:
    first, second = two_apps
    mine, theirs = first.fleet_role("reporter"), second.fleet_role("reporter")
    assert isinstance(mine, FleetRole) and mine.key == theirs.key
    assert first.fleet_role("another").key != mine.key

    assert await mine.try_take() and mine.held
    assert await mine.try_take(), "taking again what it holds"
    assert not await theirs.try_take() and not theirs.held
    another = second.fleet_role("another")
    assert await another.try_take(), "another name, another role"
    await another.release()

    await mine.release()
    assert not mine.held
    assert await theirs.try_take()
    assert not await mine.try_take()

    # The holder's connection is cut (its process died): the role is free again.
    holder = await db.fetchval(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 "
        "AND objsubid = 1 AND granted",
        (theirs.key >> 32) & 0xFFFF_FFFF,
        theirs.key & 0xFFFF_FFFF,
    )
    assert await db.fetchval("SELECT pg_terminate_backend($1)", holder)
    await wait_until(lambda: not theirs.held, timeout=10, what="the cut to be noticed")
    assert await mine.try_take()
    theirs.abandon()
    await mine.release()


def test_a_fleet_role_needs_a_name(app: Soniq) -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        app.fleet_role("")
