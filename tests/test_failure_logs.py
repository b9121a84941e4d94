"""Failures show without any instrumentation: each failed attempt at WARNING, each move to the
dead-letter queue at ERROR with its traceback, successes silent; with the `logs` layer on, each
failure is logged once, not twice; `soniq worker` prints them, at the level --log-level says."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from soniq import Backoff, Soniq
from soniq.logs import FailureLogMiddleware, LogConfig, LogMiddleware
from tests.support.waiting import running_worker, wait_status


def failing_job(app: Soniq) -> None:
    @app.job(name="flaky", max_retries=1, retry_backoff=Backoff(base=0.05, jitter=False))
    async def flaky(n: int) -> None:
        raise ValueError(f"bad input {n}")

    @app.job(name="fine")
    async def fine() -> None:
        return None


def job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "soniq.jobs"]


async def test_each_failure_is_logged_with_no_instrumentation(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    failing_job(app)
    caplog.set_level(logging.DEBUG, logger="soniq.jobs")
    async with running_worker(app):
        job_id = await app.enqueue("flaky", n=7)
        await wait_status(app, job_id, "dead_letter")
    retry, dead = job_records(caplog)

    assert retry.levelno == logging.WARNING
    message = retry.getMessage()
    assert message.startswith(f"Job flaky ({job_id}) failed on attempt 1 of 2: ")
    assert "ValueError('bad input 7')" in message  # the error's repr: its type too
    when = re.search(r"it runs again in ([\d.]+) s, at (\S+)Z$", message)
    assert when, message
    assert float(when[1]) == pytest.approx(0.05, abs=0.01)
    assert datetime.fromisoformat(when[2] + "+00:00").tzinfo is not None
    assert retry.exc_info is None
    assert getattr(retry, "event", None) == "job.retry"

    assert dead.levelno == logging.ERROR
    message = dead.getMessage()
    assert message.startswith(f"Job flaky ({job_id}) failed on attempt 2 of 2: ")
    assert "ValueError('bad input 7')" in message
    assert "moved to the dead-letter queue" in message
    assert f"soniq dead-letter retry {job_id}" in message
    assert dead.exc_info is not None and dead.exc_info[0] is ValueError
    traceback = logging.Formatter().formatException(dead.exc_info)
    assert 'raise ValueError(f"bad input {n}")' in traceback
    assert getattr(dead, "event", None) == "job.dead_letter"


async def test_successes_are_not_logged_by_default(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    failing_job(app)
    caplog.set_level(logging.DEBUG, logger="soniq.jobs")
    async with running_worker(app):
        job_id = await app.enqueue("fine")
        await wait_status(app, job_id, "done")
    assert job_records(caplog) == []


async def test_with_the_logs_layer_each_failure_is_logged_once(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    failing_job(app)
    app.instrument(logs=LogConfig(attach_context_filter=False))
    assert FailureLogMiddleware in app.middleware  # still listed: it steps aside
    caplog.set_level(logging.INFO, logger="soniq.jobs")
    async with running_worker(app):
        job_id = await app.enqueue("flaky", n=1)
        await wait_status(app, job_id, "dead_letter")
    failures = [r for r in job_records(caplog) if r.levelno >= logging.WARNING]
    assert [(r.levelno, getattr(r, "event", None)) for r in failures] == [
        (logging.WARNING, "job.retry"),
        (logging.ERROR, "job.dead_letter"),
    ]
    # The log layer's records (with every field), not the default layer's sentences.
    assert all(getattr(r, "job_id", None) == job_id for r in failures)


async def test_removing_the_logs_layer_brings_the_default_back(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    failing_job(app)
    app.instrument(logs=LogConfig(attach_context_filter=False))
    app.middleware.remove(LogMiddleware)
    caplog.set_level(logging.INFO, logger="soniq.jobs")
    async with running_worker(app):
        job_id = await app.enqueue("flaky", n=2)
        await wait_status(app, job_id, "dead_letter")
    messages = [r.getMessage() for r in job_records(caplog)]
    assert len(messages) == 2
    assert messages[0].startswith(f"Job flaky ({job_id}) failed on attempt 1 of 2")
    assert messages[1].startswith(f"Job flaky ({job_id}) failed on attempt 2 of 2")


async def test_the_default_layer_can_be_removed(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    failing_job(app)
    app.middleware.remove(FailureLogMiddleware)
    caplog.set_level(logging.DEBUG, logger="soniq.jobs")
    async with running_worker(app):
        job_id = await app.enqueue("flaky", n=1)
        await wait_status(app, job_id, "dead_letter")
    assert job_records(caplog) == []


async def test_a_logging_failure_never_fails_the_job(
    app: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    class Unprintable(Exception):
        def __repr__(self) -> str:
            raise RuntimeError("repr is broken")

    @app.job(name="odd", max_retries=0)
    async def odd() -> None:
        raise Unprintable()

    async with running_worker(app):
        job_id = await app.enqueue("odd")
        job = await wait_status(app, job_id, "dead_letter")
    # The job's own error is what was recorded; the layer's trouble was only reported.
    assert job is not None and job["attempts"] == 1
    assert any("FailureLogMiddleware" in r.getMessage() for r in caplog.records)


# -- the CLI ----------------------------------------------------------------------------------

APP_MODULE = """
from soniq import Backoff, Soniq

app = Soniq()

@app.job(name="flaky", max_retries=1, retry_backoff=Backoff(base=0.05, jitter=False))
async def flaky(n: int) -> None:
    raise ValueError(f"bad input {n}")

@app.job(name="fine")
async def fine() -> None:
    return None
"""


async def run_cli_worker(app: Soniq, clean_db: str, tmp_path: Path, *flags: str) -> str:
    """Run `soniq worker failapp:app FLAGS` until a fine job is done and a flaky one is
    dead-lettered; return what it printed."""
    failing_job(app)
    fine_id = await app.enqueue("fine")
    flaky_id = await app.enqueue("flaky", n=3)
    (tmp_path / "failapp.py").write_text(textwrap.dedent(APP_MODULE))
    env = {**os.environ, "SONIQ_DATABASE_URL": clean_db, "SONIQ_POLL_INTERVAL": "0.5"}
    env.pop("SONIQ_LOG_FORMAT", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "soniq",
        "worker",
        "failapp:app",
        *flags,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        await wait_status(app, fine_id, "done", timeout=60)
        await wait_status(app, flaky_id, "dead_letter", timeout=60)
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, out.decode()
    return out.decode().replace(flaky_id, "<FLAKY>")


async def test_soniq_worker_prints_failures_by_default(
    app: Soniq, clean_db: str, tmp_path: Path
) -> None:
    text = await run_cli_worker(app, clean_db, tmp_path)
    lines = text.splitlines()
    [retry] = [line for line in lines if "WARNING" in line and "soniq.jobs" in line]
    assert "Job flaky (<FLAKY>) failed on attempt 1 of 2: ValueError('bad input 3')" in retry
    [dead] = [line for line in lines if "ERROR" in line and "soniq.jobs" in line]
    assert "failed on attempt 2 of 2" in dead and "moved to the dead-letter queue" in dead
    assert "Traceback (most recent call last)" in text
    # Successes are quiet: the fine job left no line.
    assert "fine" not in " ".join(line for line in lines if "soniq.jobs" in line)


async def test_soniq_worker_log_level_flag(app: Soniq, clean_db: str, tmp_path: Path) -> None:
    text = await run_cli_worker(app, clean_db, tmp_path, "--log-level", "error")
    assert "failed on attempt 1 of 2" not in text  # a WARNING: below the level asked for
    assert "failed on attempt 2 of 2" in text
    assert " INFO " not in text  # the worker's start and stop lines are gone too
