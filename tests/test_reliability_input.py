"""Bad input and misuse: a clear error in bounded time, and nothing written."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import asyncpg
import pytest

from soniq import (
    ConfigurationError,
    DatabaseUnavailable,
    JobArgumentsError,
    JobContext,
    SchemaError,
    Soniq,
    Worker,
)
from tests.apps.procs import REPO
from tests.support.waiting import running_worker, wait_status, wait_until


def soniq_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soniq", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def job_count(db: asyncpg.Connection[Any]) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM soniq_jobs")
    return count


# -- database URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("localhost:5432/mydb", "must start with postgresql://"),
        ("mysql://root@localhost/db", "must start with postgresql://"),
        ("postgresql://user@localhost:port/db", "invalid port"),
        ("postgresql://[::1/db", "Malformed database URL"),
    ],
)
def test_a_malformed_url_is_refused_before_any_connection(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        Soniq(url)


def test_a_malformed_url_in_the_environment_fails_the_cli_cleanly() -> None:
    result = soniq_cli("worker", "tests.apps.jobs:app", SONIQ_DATABASE_URL="localhost/db")
    assert result.returncode == 1, result.stderr
    assert "must start with postgresql://" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a server that hangs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there any more


@pytest.mark.parametrize("where", ["closed_port", "silent_server"])
async def test_an_unreachable_database_gives_a_clear_error_in_bounded_time(
    where: str, request: pytest.FixtureRequest
) -> None:
    port = request.getfixturevalue(where)
    app = Soniq(f"postgresql://postgres@127.0.0.1:{port}/db", connect_timeout=0.5)

    @app.job()
    async def hello() -> None: ...

    try:
        for action in (
            app.setup,
            lambda: app.enqueue(hello),
            app.queue_status,
            app.worker(install_signal_handlers=False).run,
        ):
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match=f"Cannot reach PostgreSQL.*:{port}"):
                await asyncio.wait_for(action(), 30)  # the guard only: it must end far sooner
            assert time.monotonic() - started < 10
    finally:
        await app.close()


def test_the_cli_worker_exits_with_a_clear_error_when_the_database_is_unreachable(
    closed_port: int,
) -> None:
    result = soniq_cli(
        "worker",
        "tests.apps.jobs:app",
        SONIQ_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{closed_port}/db",
        SONIQ_CONNECT_TIMEOUT="1",
    )
    assert result.returncode == 1
    assert "Cannot reach PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


# -- missing schema ------------------------------------------------------------------------


async def test_a_missing_schema_names_soniq_setup_and_nothing_is_created(
    empty_database_url: str,
) -> None:
    app = Soniq(empty_database_url, connect_timeout=5)

    @app.job()
    async def hello() -> None: ...

    try:
        with pytest.raises(SchemaError, match="soniq setup"):
            await app.enqueue(hello)
        with pytest.raises(SchemaError, match="soniq setup"):
            await app.worker(install_signal_handlers=False).run()
    finally:
        await app.close()
    conn = await asyncpg.connect(empty_database_url)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'soniq%'")
    finally:
        await conn.close()
    assert tables == 0

    result = soniq_cli("worker", "tests.apps.jobs:app", SONIQ_DATABASE_URL=empty_database_url)
    assert result.returncode == 1
    assert "soniq setup" in result.stderr
    assert "Traceback" not in result.stderr


# -- arguments -----------------------------------------------------------------------------


@pytest.fixture
async def echo_app(app: Soniq) -> AsyncIterator[Soniq]:
    @app.job(name="echo", max_retries=0)
    async def echo(value: Any) -> Any:
        return value

    yield app


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (datetime.now(timezone.utc), "argument 'value' \\(datetime\\) is not JSON-serialisable"),
        ({1, 2}, "argument 'value' \\(set\\) is not JSON-serialisable"),
        (float("nan"), "argument 'value' \\(float\\) is not JSON-serialisable"),
        ("nul \x00 inside", "cannot be stored"),
        ("half a pair \ud800", "cannot be stored"),
        ({"deep": "\x00"}, "cannot be stored"),
    ],
    ids=["datetime", "set", "nan", "nul-char", "lone-surrogate", "nested-nul"],
)
async def test_arguments_that_cannot_be_stored_are_refused_and_nothing_is_written(
    echo_app: Soniq, db: asyncpg.Connection[Any], value: Any, complaint: str
) -> None:
    with pytest.raises(JobArgumentsError, match=complaint):
        await echo_app.enqueue("echo", value=value)
    with pytest.raises(JobArgumentsError, match=complaint):
        await echo_app.enqueue_many("echo", [{"value": 1}, {"value": value}])
    async with (await echo_app.pool()).acquire() as conn, conn.transaction():
        with pytest.raises(JobArgumentsError, match=complaint):
            await echo_app.enqueue("echo", connection=conn, value=value)
    assert await job_count(db) == 0


async def test_a_priority_outside_the_column_range_is_refused(
    echo_app: Soniq, db: asyncpg.Connection[Any]
) -> None:
    with pytest.raises(JobArgumentsError, match="out of int32 range"):
        await echo_app.enqueue("echo", priority=2**40, value=1)
    assert await job_count(db) == 0


@pytest.fixture
async def record_app(app: Soniq) -> AsyncIterator[Soniq]:
    @app.job(name="record", max_retries=0)
    async def record(tag: str, ctx: JobContext, count: int = 1, *, note: str | None = None) -> None:
        return None

    yield app


SIGNATURE = "Its signature is record(tag: str, count: int = 1, *, note: str | None = None) -> None"


@pytest.mark.parametrize(
    ("kwargs", "problems"),
    [
        (
            {"tagg": "x"},
            "unexpected keyword argument 'tagg' (did you mean 'tag'?); "
            "missing required argument 'tag'",
        ),
        ({}, "missing required argument 'tag'"),
        (
            {"tag": "x", "cuont": 2, "colour": "red"},
            "unexpected keyword argument 'cuont' (did you mean 'count'?); "
            "unexpected keyword argument 'colour'",
        ),
        (
            {"tga": "x", "nte": "n", "count": 3},
            "unexpected keyword argument 'tga' (did you mean 'tag'?); "
            "unexpected keyword argument 'nte' (did you mean 'note'?); "
            "missing required argument 'tag'",
        ),
    ],
    ids=["typo", "missing", "two-unexpected", "typos-and-missing"],
)
async def test_an_argument_error_names_every_problem_and_the_signature(
    record_app: Soniq, db: asyncpg.Connection[Any], kwargs: dict[str, Any], problems: str
) -> None:
    expected = f"Job 'record' cannot take these arguments: {problems}. {SIGNATURE}; "
    with pytest.raises(JobArgumentsError) as raised:
        await record_app.enqueue("record", **kwargs)
    assert str(raised.value).startswith(expected)
    with pytest.raises(JobArgumentsError) as raised:
        await record_app.enqueue_many("record", [{"tag": "fine"}, kwargs])
    assert str(raised.value).startswith(expected)
    assert await job_count(db) == 0


async def test_the_job_context_parameter_is_not_offered_as_a_fix(record_app: Soniq) -> None:
    # ctx is filled in by Soniq: neither in the signature shown nor suggested for a typo.
    with pytest.raises(JobArgumentsError) as raised:
        await record_app.enqueue("record", tag="x", ctxx=1)
    assert "unexpected keyword argument 'ctxx'. " in str(raised.value)
    assert "ctx" not in str(raised.value).split("Its signature")[1]


# -- results and errors the database cannot store ------------------------------------------


class Opaque:
    pass


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "result",
    [Opaque(), float("inf"), 10**5000, "nul \x00 inside", {"k": "half \udc00"}, nested(5000)],
    ids=["object", "inf", "huge-int", "nul-char", "lone-surrogate", "too-deep"],
)
async def test_a_result_that_cannot_be_stored_still_counts_as_done_with_a_warning(
    app: Soniq, caplog: pytest.LogCaptureFixture, result: Any
) -> None:
    caplog.set_level(logging.WARNING, logger="soniq")

    @app.job(name="odd", max_retries=0)
    async def odd() -> Any:
        return result

    @app.job(name="fine", max_retries=0)
    async def fine(n: int) -> int:
        return n

    odd_id = await app.enqueue("odd")
    others = await app.enqueue_many("fine", [{"n": i} for i in range(5)])
    async with running_worker(app, concurrency=8):
        job = await wait_status(app, odd_id, "done")
        neighbours = [await wait_status(app, j, "done") for j in others]
    assert job["result"] is None and job["attempts"] == 1
    assert [n["result"] for n in neighbours] == list(range(5))  # their results survive
    assert odd_id in caplog.text and "result is not kept" in caplog.text


@pytest.mark.parametrize(
    "message", ["nul \x00 inside", "half \ud800 a pair"], ids=["nul-char", "lone-surrogate"]
)
async def test_an_error_message_the_database_cannot_store_is_kept_in_a_safe_form(
    app: Soniq, message: str
) -> None:
    @app.job(name="fails", max_retries=0)
    async def fails() -> None:
        raise ValueError(message)

    job_id = await app.enqueue("fails")
    async with running_worker(app):
        job = await wait_status(app, job_id, "dead_letter")
    assert job["attempts"] == 1
    assert job["last_error"].startswith("ValueError: ")
    assert "inside" in job["last_error"] or "a pair" in job["last_error"]
    assert "ValueError" in job["traceback"]


# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
async def test_a_non_positive_or_non_integer_concurrency_is_refused(
    app: Soniq, db: asyncpg.Connection[Any], bad: Any
) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Worker(app, concurrency=bad)
    with pytest.raises(ConfigurationError, match="concurrency"):
        await app.run_worker(concurrency=bad, install_signal_handlers=False)
    assert await db.fetchval("SELECT count(*) FROM soniq_workers") == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_a_non_positive_concurrency_setting_is_refused(bad: int) -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Soniq("postgresql://localhost/db", concurrency=bad)


@pytest.mark.parametrize(
    "args",
    [("--concurrency", "0"), ("--concurrency", "-2"), ("-c", "zero"), ("--processes", "0")],
)
def test_the_cli_refuses_a_non_positive_concurrency(
    database_url: str, args: tuple[str, ...]
) -> None:
    result = soniq_cli("worker", "tests.apps.jobs:app", *args, SONIQ_DATABASE_URL=database_url)
    assert result.returncode == 2, result.stderr
    assert "Invalid value" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_non_positive_concurrency_in_the_environment_fails_the_cli_cleanly(
    database_url: str,
) -> None:
    result = soniq_cli(
        "worker", "tests.apps.jobs:app", SONIQ_DATABASE_URL=database_url, SONIQ_CONCURRENCY="0"
    )
    assert result.returncode == 1, result.stderr
    assert "concurrency" in result.stderr
    assert "Traceback" not in result.stderr


async def test_unknown_job_names_wait_for_a_worker_that_knows_them(
    clean_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling deploy: old workers do not know a new job yet. They leave it alone (queued,
    no attempt used) and say so; a new worker runs it."""
    caplog.set_level(logging.WARNING, logger="soniq")
    old = Soniq(clean_db, poll_interval=0.2, lease_seconds=1.5)
    new = Soniq(clean_db, poll_interval=0.2, lease_seconds=1.5)

    @old.job(name="greet")
    @new.job(name="greet")
    async def greet() -> str:
        return "hi"

    @new.job(name="fresh", max_retries=0)
    async def fresh(x: int) -> int:
        return x * 2

    try:
        fresh_id = await new.enqueue("fresh", x=21)
        async with running_worker(old, concurrency=4):
            greet_id = await new.enqueue("greet")
            await wait_status(old, greet_id, "done")  # this worker is claiming, just not that
            await wait_until(lambda: "'fresh'" in caplog.text, what="the unknown-name warning")
            waiting = await old.get_job(fresh_id)
        assert waiting is not None
        assert (waiting["status"], waiting["attempts"], waiting["worker_id"]) == ("queued", 0, None)
        assert waiting["last_error"] is None
        assert "does not know that job" in caplog.text

        async with running_worker(new):
            job = await wait_status(new, fresh_id, "done")
        assert (job["result"], job["attempts"]) == (42, 1)
    finally:
        await old.close()
        await new.close()
