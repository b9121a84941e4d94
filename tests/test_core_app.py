"""Issue 2, points 1-3: the app object, where its database comes from, jobs and the registry."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from soniq import Backoff, ConfigurationError, JobContext, Soniq
from soniq.database import mask_url
from tests.support.waiting import running_worker, wait_status


def test_misspelt_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="concurency"):
        Soniq("postgresql://localhost/x", concurency=3)


def test_invalid_setting_value_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="concurrency"):
        Soniq("postgresql://localhost/x", concurrency=0)


def test_url_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIQ_DATABASE_URL", "postgresql://env-host/envdb")
    app = Soniq("postgresql://arg-host/argdb")
    assert app._store._resolve_url()[0] == "postgresql://arg-host/argdb"


def test_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIQ_DATABASE_URL", "postgresql://env-host/envdb")
    app = Soniq()
    assert app._store._resolve_url() == ("postgresql://env-host/envdb", "SONIQ_DATABASE_URL")


def test_pool_is_created_lazily() -> None:
    # An unreachable host: construction must not try to connect.
    app = Soniq("postgresql://postgres@127.0.0.1:1/nothing")
    assert app._store._pool is None
    assert app.database_url is None


def test_mask_url_hides_passwords() -> None:
    assert mask_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert "s3cret" not in mask_url("postgresql://bob:s3cret@db/x")
    assert mask_url("postgresql://bob@db/x") == "postgresql://bob@db/x"


async def test_logs_one_line_naming_the_database_with_password_masked(
    clean_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = clean_db.replace("postgresql://postgres@", "postgresql://postgres:hunter2@")
    caplog.set_level(logging.INFO, logger="soniq")
    async with Soniq(url) as app:
        await app.queue_status()
        await app.queue_status()
    lines = [r.getMessage() for r in caplog.records if "uses database" in r.getMessage()]
    assert len(lines) == 1
    assert "***" in lines[0] and "hunter2" not in lines[0]
    assert all("hunter2" not in r.getMessage() for r in caplog.records)


async def test_embedded_database_when_no_url_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONIQ_DATABASE_URL", raising=False)
    # Not pytest's tmp_path: as root the server runs as another user, who must reach the folder.
    data_dir = Path(tempfile.gettempdir()) / f"soniq-test-embedded-{os.getuid()}" / "pgdata"
    data_dir.parent.mkdir(mode=0o755, exist_ok=True)
    async with Soniq(data_dir=data_dir) as app:

        @app.job()
        async def hello(name: str) -> str:
            return f"hello {name}"

        await app.setup()
        job_id = await app.enqueue(hello, name="embedded")
        await app.run_worker(run_once=True, install_signal_handlers=False)
        job = await app.get_job(job_id)
        assert job is not None and job["result"] == "hello embedded"
        assert app.database_url is not None and str(data_dir) in app.database_url
    # Reused across runs: the data folder was initialised once and is still there.
    assert (data_dir / "PG_VERSION").exists()


async def test_async_with_and_close(clean_db: str) -> None:
    async with Soniq(clean_db) as app:
        await app.queue_status()
        assert app._store._pool is not None
    assert app._store._pool is None
    await app.close()  # closing twice is harmless


# -- jobs and the registry --------------------------------------------------------------------


def test_job_defaults_and_registry_dict() -> None:
    app = Soniq("postgresql://localhost/x")

    @app.job()
    async def send(to: str) -> None: ...

    name = f"{__name__}.test_job_defaults_and_registry_dict.<locals>.send"
    assert app.registry is app._get_job_registry()
    meta = app._get_job_registry().get_job(name)
    assert meta is not None
    assert meta["func"] is send
    assert meta["max_retries"] == 3
    assert meta["queue"] == "default"
    assert meta["priority"] == 0
    assert meta["timeout"] is None
    assert app.registry.get_job("no.such.job") is None


def test_job_options() -> None:
    app = Soniq("postgresql://localhost/x")
    backoff = Backoff(base=2, factor=3, max_delay=60, jitter=0.1)

    @app.job(
        name="emails.send",
        queue="emails",
        max_retries=5,
        priority=-3,
        timeout=2.5,
        retry_backoff=backoff,
    )
    def send() -> None: ...

    meta = app.registry.get_job("emails.send")
    assert meta is not None
    assert (meta["queue"], meta["max_retries"], meta["priority"], meta["timeout"]) == (
        "emails",
        5,
        -3,
        2.5,
    )
    assert meta["backoff"] is backoff


def test_misspelt_job_option_is_a_type_error_at_decoration() -> None:
    app = Soniq("postgresql://localhost/x")
    with pytest.raises(TypeError, match="max_retry"):
        app.job(max_retry=3)  # type: ignore[call-arg]


def test_bad_job_option_values() -> None:
    app = Soniq("postgresql://localhost/x")
    with pytest.raises(ConfigurationError, match="max_retries"):
        app.job(max_retries=-1)(lambda: None)
    with pytest.raises(ConfigurationError, match="timeout"):
        app.job(timeout=0)(lambda: None)


def test_backoff_is_exponential_capped_and_jittered() -> None:
    b = Backoff(base=1, factor=2, max_delay=5, jitter=0.5)
    for attempt, raw in [(1, 1), (2, 2), (3, 4), (4, 5), (10, 5)]:
        delays = [b.delay(attempt) for _ in range(200)]
        assert all(raw * 0.5 <= d <= raw for d in delays)
        assert len({round(d, 6) for d in delays}) > 1  # jittered


async def test_plain_def_job_runs_in_thread_without_blocking_loop(app: Soniq) -> None:
    threads: list[str] = []

    @app.job()
    def blocking() -> str:
        threads.append(threading.current_thread().name)
        time.sleep(0.5)
        return "ok"

    job_id = await app.enqueue(blocking)
    ticks = 0
    async with running_worker(app):

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await wait_status(app, job_id, "done")
        ticker.cancel()
    assert threads and threads[0] != threading.main_thread().name
    # While the job slept for 0.5 s the loop kept turning (about 50 ticks if never blocked).
    assert ticks >= 20


async def test_sync_jobs_are_bounded_by_the_thread_pool(clean_db: str) -> None:
    app = Soniq(clean_db, thread_pool_size=2, poll_interval=0.5)
    running = 0
    peak = 0
    lock = threading.Lock()

    @app.job()
    def slow() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.1)
        with lock:
            running -= 1

    await app.enqueue_many(slow, [{}] * 6)
    await app.run_worker(concurrency=6, run_once=True, install_signal_handlers=False)
    await app.close()
    assert peak == 2


async def test_job_context_is_injected(app: Soniq) -> None:
    seen: list[JobContext] = []

    @app.job(name="ctx.job", queue="q1", max_retries=2)
    async def job(x: int, ctx: JobContext) -> None:
        seen.append(ctx)

    job_id = await app.enqueue("ctx.job", x=1)
    async with running_worker(app) as worker:
        await wait_status(app, job_id, "done")
    ctx = seen[0]
    assert ctx.job_id == job_id
    assert ctx.job_name == "ctx.job"
    assert (ctx.attempt, ctx.max_attempts, ctx.queue) == (1, 3, "q1")
    assert ctx.worker_id == worker.id
    row = await app.get_job(job_id)
    assert row is not None and ctx.enqueued_at == row["created_at"]
