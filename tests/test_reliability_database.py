"""PostgreSQL restarted under running workers, on a private server the test may stop at will
(the shared one on 5432 is never touched)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from soniq import DatabaseUnavailable, Soniq
from tests.apps.jobs import build
from tests.apps.pgserver import PrivateServer
from tests.apps.procs import Fleet, WorkerProcess, attempts_of, reset_attempts
from tests.support.waiting import running_worker, wait_status, wait_until

CONNECT_TIMEOUT = 2.0


@pytest.fixture
def private_server() -> Iterator[PrivateServer]:
    server = PrivateServer()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
async def producer(private_server: PrivateServer) -> AsyncIterator[Soniq]:
    app = build(private_server.url, connect_timeout=CONNECT_TIMEOUT, command_timeout=5)
    await app.setup()
    yield app
    await app.close()


async def counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM soniq_jobs GROUP BY status")
    finally:
        await conn.close()
    return {r["status"]: r["n"] for r in rows}


async def logged(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    await wait_until(
        lambda: text in worker.log(),
        timeout=timeout,
        interval=0.05,
        what=f"{text!r} in the log of worker {worker.pid}",
    )


async def test_workers_ride_out_a_database_restart_and_lose_nothing(
    private_server: PrivateServer, producer: Soniq, tmp_path: Path
) -> None:
    url = private_server.url
    enqueued: list[str] = []
    refused: list[float] = []
    stop_producing = asyncio.Event()

    async def produce() -> None:
        # A steady trickle of jobs through the whole outage, as an application would send.
        while not stop_producing.is_set():
            started = time.monotonic()
            try:
                enqueued.append(await producer.enqueue("nap", seconds=0.02))
            except DatabaseUnavailable:
                refused.append(time.monotonic() - started)
            await asyncio.sleep(0.01)

    # A long poll interval: after the restart, only LISTEN/NOTIFY can bring new jobs promptly.
    with Fleet(
        url, tmp_path, lease_seconds=5, poll_interval=60, connect_timeout=CONNECT_TIMEOUT
    ) as fleet:
        workers = [await fleet.start_ready("--concurrency", "4") for _ in range(2)]
        producing = asyncio.create_task(produce())
        await wait_until(lambda: len(enqueued) >= 100, timeout=30, what="jobs to flow")

        await asyncio.to_thread(private_server.stop)
        before = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match="Cannot reach PostgreSQL"):
            await asyncio.wait_for(producer.enqueue("nap", seconds=0), CONNECT_TIMEOUT + 20)
        assert time.monotonic() - before < CONNECT_TIMEOUT + 5  # an answer, not a hang
        for worker in workers:
            await logged(worker, "LISTEN connection lost")
        await wait_until(lambda: len(refused) >= 3, what="enqueues refused during the outage")
        await asyncio.to_thread(private_server.start)

        for worker in workers:
            await logged(worker, "LISTEN connection restored")
        flowing_again = len(enqueued)
        await wait_until(
            lambda: len(enqueued) >= flowing_again + 50,
            timeout=30,
            what="enqueues to succeed again",
        )
        stop_producing.set()
        await producing

        # Everything sent before, during and after the outage is done; nothing is stuck.
        async def all_done() -> bool:
            return set(await counts(url)) == {"done"}

        await wait_until(all_done, timeout=60, interval=0.2, what="every job to be done")
        conn = await asyncpg.connect(url)
        try:
            done = await conn.fetchval(
                "SELECT count(*) FROM soniq_jobs WHERE id = ANY($1::uuid[]) AND status = 'done'",
                enqueued,
            )
        finally:
            await conn.close()
        assert done == len(enqueued)
        # Every worker is idle on a 60 s poll now: this one is heard through NOTIFY.
        late = await producer.enqueue("nap", seconds=0)
        await wait_status(producer, late, "done", timeout=15)
        logs = [w.log() for w in workers]

    assert all("Database unavailable" not in log or "connection restored" in log for log in logs)
    assert any("Database unavailable" in log for log in logs), logs
    assert max(refused) < CONNECT_TIMEOUT + 5
    # Soniq's own lines are one-line warnings; the only tracebacks are asyncpg's pool logging
    # its attempts to reconnect.
    for log in logs:
        assert " ERROR " not in log and "never retrieved" not in log, log
        for record in re.split(r"\n(?=\d{4}-\d\d-\d\d )", log):
            if "Traceback" in record:  # one record may chain several tracebacks
                assert "asyncpg.pool: Failed to restore the pool connection" in record, record


async def test_an_outage_longer_than_the_lease_costs_no_live_worker_its_jobs(
    private_server: PrivateServer, producer: Soniq, tmp_path: Path
) -> None:
    """Nobody can beat while the server is down. After it returns, a worker must not take the
    jobs of others (still running, or finished with results not yet written) as lost."""
    url = private_server.url
    lease = 1.5
    conn = await asyncpg.connect(url)
    await reset_attempts(conn)
    await conn.close()
    with Fleet(
        url, tmp_path, lease_seconds=lease, poll_interval=0.2, connect_timeout=CONNECT_TIMEOUT
    ) as fleet:
        workers = [await fleet.start_ready("--concurrency", "3") for _ in range(2)]
        # max_retries=0 each: a lost attempt would dead-letter them.
        spanning = [await producer.enqueue("sleepy_once", first=lease * 4) for _ in range(3)]
        ending_inside = [await producer.enqueue("nap", seconds=1.0) for _ in range(3)]

        async def all_claimed() -> bool:
            return (await counts(url)).get("processing") == 6

        await wait_until(all_claimed, timeout=20, what="all six jobs to be running")
        await asyncio.to_thread(private_server.stop)
        for worker in workers:
            await logged(worker, "LISTEN connection lost")
        await asyncio.sleep(lease * 2)  # the outage itself, longer than the lease
        await asyncio.to_thread(private_server.start)

        jobs = [
            await wait_status(producer, j, "done", timeout=30) for j in spanning + ending_inside
        ]
        conn = await asyncpg.connect(url)
        try:
            attempts = [await attempts_of(conn, j) for j in spanning]
        finally:
            await conn.close()
        logs = [w.log() for w in workers]

    assert [j["attempts"] for j in jobs] == [1] * 6
    assert [len(rows) for rows in attempts] == [1, 1, 1]  # each ran once, never twice
    assert not any("lost its worker" in log for log in logs), logs
    # Each worker said it had been out of touch for longer than its lease.
    assert all("has not beaten for over its 1.5s lease" in log for log in logs), logs


async def test_jobs_claimed_by_the_first_round_trip_after_an_outage_stay_claimed(
    private_server: PrivateServer, producer: Soniq, caplog: pytest.LogCaptureFixture
) -> None:
    """After an outage the worker releases claims it may have lost in flight; the jobs its
    first successful round trip has just claimed are not among those."""
    caplog.set_level(logging.INFO, logger="soniq")
    app = Soniq(
        private_server.url, lease_seconds=30, poll_interval=0.2, connect_timeout=CONNECT_TIMEOUT
    )
    running = asyncio.Event()

    @app.job(name="watched")
    async def watched() -> None:
        running.set()
        await asyncio.sleep(3)

    try:
        async with running_worker(app) as worker:
            await asyncio.to_thread(private_server.stop)
            # The worker backs off a little longer each time; once it waits two seconds the
            # job below is surely ready when its first round trip after the outage comes.
            await wait_until(
                lambda: "retries in 2s" in caplog.text, timeout=30, what="the worker to back off"
            )
            await asyncio.to_thread(private_server.start)
            job_id = await app.enqueue("watched")
            await asyncio.wait_for(running.wait(), 30)
            job = await producer.get_job(job_id)
            assert job is not None
            assert (job["status"], job["worker_id"], job["attempts"]) == (
                "processing",
                worker.id,
                1,
            )
            await wait_status(producer, job_id, "done", timeout=15)
    finally:
        await app.close()
