"""Issue 16, points 2 and 6: Snooze puts a job back without using an attempt."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from soniq import (
    AttemptContext,
    CallNext,
    ConfigurationError,
    JobContext,
    Snooze,
    Soniq,
)
from tests.support.waiting import running_worker, wait_status


async def test_snoozed_job_runs_again_with_the_same_attempt(
    app: Soniq, db: asyncpg.Connection
) -> None:
    seen: list[tuple[int, int]] = []
    hooks: list[str] = []
    outcomes: list[str | None] = []

    @app.job(name="s.poll", max_retries=2)
    async def poll(ctx: JobContext) -> str:
        seen.append((ctx.attempt, ctx.snoozes))
        if ctx.snoozes == 0:
            return Snooze(0.2, reason="not ready")  # type: ignore[return-value]
        if ctx.snoozes == 1:
            raise Snooze(0.1)
        return "ready"

    @app.after_job
    def after(name: str, job_id: str, ms: float) -> None:
        hooks.append("after_job")

    @app.on_error
    def on_error(name: str, job_id: str, error: str, attempt: int) -> None:
        hooks.append("on_error")

    @app.middleware
    async def watch(ctx: AttemptContext, call_next: CallNext) -> Any:
        try:
            return await call_next(ctx)
        finally:
            outcomes.append(ctx.outcome)

    job_id = await app.enqueue(poll)
    async with running_worker(app, concurrency=2):
        row = await wait_status(app, job_id, "done")
    assert seen == [(1, 0), (1, 1), (1, 2)]  # same attempt each time; snoozes counted
    assert outcomes == ["snoozed", "snoozed", "done"]
    assert hooks == ["after_job"]  # neither hook fired for the two snoozes
    assert row["attempts"] == 1 and row["result"] == "ready"
    assert await db.fetchval("SELECT snoozes FROM soniq_jobs WHERE id = $1", job_id) == 2


async def test_past_max_snoozes_the_job_is_dead_lettered_with_a_reason(app: Soniq) -> None:
    runs: list[int] = []

    @app.job(name="s.forever", max_snoozes=2)
    def forever(ctx: JobContext) -> None:  # a plain def job snoozes the same way
        runs.append(ctx.snoozes)
        raise Snooze(0, reason="still busy")

    job_id = await app.enqueue(forever)
    async with running_worker(app):
        row = await wait_status(app, job_id, "dead_letter")
    assert runs == [0, 1, 2]
    assert "max_snoozes (2)" in row["last_error"] and "still busy" in row["last_error"]
    assert row["attempts"] == 1


def test_bad_snooze_and_max_snoozes_are_refused(app: Soniq) -> None:
    with pytest.raises(ConfigurationError, match="0 or more"):
        Snooze(-1)
    with pytest.raises(ConfigurationError, match="0 or more"):
        Snooze(float("nan"))
    with pytest.raises(ConfigurationError, match="max_snoozes"):
        app.job(max_snoozes=-1)
    assert len(app.registry) == 0
