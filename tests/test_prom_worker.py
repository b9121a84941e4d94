"""soniq_prom against real processes: a `soniq worker` process scraped over HTTP, promtool on
its output, `--processes 2` behind one endpoint, and a real Prometheus server scraping it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.samples import Sample

from tests.support.programs import require_program
from tests.support.waiting import wait_until
from tests.test_prom_support import (
    log_text,
    make_app,
    samples,
    scrape,
    spawn,
    stop,
    value,
    worker_process,
)

ALLOWED_LABELS = {"queue", "job_name", "outcome", "state", "le"}


async def _statuses(db: asyncpg.Connection[Any]) -> dict[str, int]:
    rows = await db.fetch("SELECT status, count(*) AS n FROM soniq_jobs GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def test_worker_process_endpoint_counts_the_jobs_it_ran(
    clean_db: str, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    producer = make_app(clean_db, prometheus=False, traced=False)
    log = tmp_path / "worker.log"
    try:
        async with worker_process(clean_db, log, "--concurrency", "4") as (_proc, url):
            assert url.startswith("http://127.0.0.1:"), "the default bind address is loopback"
            for _ in range(5):
                await producer.enqueue("ok")
            await producer.enqueue_many("flaky", [{}, {}])
            await producer.enqueue("doomed")
            await producer.enqueue("fanout", n=3)  # the worker itself enqueues 3 "ok" jobs
            await wait_until(
                lambda: _done(db, done=11, dead_letter=1), timeout=30, what="all jobs to finish"
            )
            text = await scrape(url)
    finally:
        await producer.close()

    found = samples(text)
    attempts = "soniq_job_attempts_total"
    expected = {
        ("ok", "done"): 8,
        ("ok", "retry"): 0,
        ("ok", "dead_letter"): 0,
        ("flaky", "done"): 2,
        ("flaky", "retry"): 2,
        ("flaky", "dead_letter"): 0,
        ("doomed", "done"): 0,
        ("doomed", "retry"): 1,
        ("doomed", "dead_letter"): 1,
        ("fanout", "done"): 1,
    }
    for (job, outcome), n in expected.items():
        assert value(found, attempts, job_name=job, outcome=outcome) == n, (job, outcome)
    for job, n in {"ok": 8, "flaky": 4, "doomed": 2, "fanout": 1}.items():
        assert value(found, "soniq_job_duration_seconds_count", job_name=job) == n, job
        assert value(found, "soniq_job_queue_wait_seconds_count", job_name=job) == n, job
        # Every observation lands in the +Inf bucket, so it equals the count.
        assert value(found, "soniq_job_duration_seconds_bucket", job_name=job, le="+Inf") == n
    assert value(found, "soniq_jobs_enqueued_total", job_name="ok") == 3
    assert value(found, "soniq_jobs_enqueued_total") == 3
    assert value(found, "soniq_jobs_in_progress") == 0
    assert value(found, "soniq_worker_capacity") == 4
    assert value(found, "soniq_telemetry_errors_total") == 0
    # Queue state from PostgreSQL, reported by this (the only) process.
    assert value(found, "soniq_queue_jobs", queue="default", state="dead_letter") == 1
    assert value(found, "soniq_queue_jobs", queue="default", state="ready") == 0
    assert value(found, "soniq_queue_jobs", queue="default", state="processing") == 0
    assert value(found, "soniq_queue_oldest_ready_age_seconds", queue="default") == 0
    assert value(found, "soniq_workers_live") == 1
    assert {k for s in found for k in s.labels} <= ALLOWED_LABELS

    # promtool's linter (HELP text, _total counters, base units, naming) is clean. Looked for
    # here, not first: without it the endpoint is still checked above, then the test skips.
    promtool = await asyncio.create_subprocess_exec(
        require_program("promtool", "prometheus"),
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    report, _ = await asyncio.wait_for(promtool.communicate(text.encode()), 60)
    assert promtool.returncode == 0 and not report.strip(), report.decode()
    assert "Serving Prometheus metrics on http://127.0.0.1:" in log_text(log)


async def _done(db: asyncpg.Connection[Any], **wanted: int) -> bool:
    counts = await _statuses(db)
    return all(counts.get(status, 0) == n for status, n in wanted.items())


async def test_processes_serve_one_endpoint_whose_counts_add_up(
    clean_db: str, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    producer = make_app(clean_db, prometheus=False, traced=False)
    log = tmp_path / "workers.log"
    pids: list[int] = []
    try:
        async with worker_process(clean_db, log, "--processes", "2", "--concurrency", "2") as (
            parent,
            url,
        ):
            assert "Serving Prometheus metrics of 2 worker processes on" in log_text(log)

            async def registered() -> list[int]:
                rows = await db.fetch("SELECT pid FROM soniq_workers")
                return [r["pid"] for r in rows] if len(rows) == 2 else []

            pids = await wait_until(registered, timeout=30, what="both worker processes")
            shared = _multiproc_dir(pids[0])
            assert await asyncio.to_thread(os.path.isdir, shared)
            # Long enough that both processes take some: each has only 2 slots.
            await producer.enqueue_many("slow", [{"seconds": 0.1} for _ in range(20)])
            await wait_until(lambda: _done(db, done=20), timeout=30, what="20 jobs done")
            found = samples(await scrape(url))
            ran_in = {
                json.loads(r["result"])
                for r in await db.fetch("SELECT result::text FROM soniq_jobs WHERE status = 'done'")
            }
            assert ran_in == set(pids), "both processes ran jobs"
            attempts = "soniq_job_attempts_total"
            assert value(found, attempts, job_name="slow", outcome="done") == 20
            assert value(found, attempts) == 20
            assert value(found, "soniq_job_duration_seconds_count", job_name="slow") == 20
            assert value(found, "soniq_job_queue_wait_seconds_count", job_name="slow") == 20
            assert value(found, "soniq_jobs_in_progress") == 0
            assert value(found, "soniq_worker_capacity") == 4  # 2 processes x 2 slots
            assert value(found, "soniq_workers_live") == 2  # the parent reports it, once
            # Each family appears once: the parent merged the children's files.
            assert len([s for s in found if s.name == "soniq_worker_capacity"]) == 1

            # A child killed in the middle of a job: the parent forgets its live gauges (the
            # job in progress, its slots); its finished counts stay in the total.
            await producer.enqueue("slow", seconds=30)

            async def running_in() -> int | None:
                worker_id = await db.fetchval(
                    "SELECT worker_id FROM soniq_jobs WHERE status = 'processing'"
                )
                return int(worker_id.split(":")[1]) if worker_id else None

            victim = await wait_until(running_in, timeout=30, what="the long job to start")
            assert value(samples(await scrape(url)), "soniq_jobs_in_progress") == 1
            os.kill(victim, signal.SIGKILL)

            async def forgotten() -> list[Sample] | None:
                got = samples(await scrape(url))
                gone = value(got, "soniq_jobs_in_progress") == 0
                return got if gone and value(got, "soniq_worker_capacity") == 2 else None

            found = await wait_until(forgotten, timeout=30, what="the killed child's gauges")
            assert value(found, attempts, job_name="slow", outcome="done") == 20
            assert value(found, "soniq_job_duration_seconds_count", job_name="slow") == 20
            assert parent.returncode is None, "the parent outlives a child"
        # The killed child's status is the parent's exit status, as a shell would report it.
        assert parent.returncode == 128 + signal.SIGKILL
        assert not await asyncio.to_thread(os.path.exists, shared), "the parent cleans up"
    finally:
        await producer.close()
        for pid in pids:  # in case the parent could not stop them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--metrics-port", "0", "--metrics-host", "127.0.0.2"], {}),
        ([], {"SONIQ_METRICS_PORT": "0", "SONIQ_METRICS_HOST": "127.0.0.2"}),
    ],
    ids=["flags", "settings"],
)
async def test_bind_address_comes_from_flags_or_settings_and_is_logged(
    clean_db: str, tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    async with worker_process(
        clean_db, tmp_path / "worker.log", *args, env=env, port_flag=False
    ) as (_proc, url):
        assert url.startswith("http://127.0.0.2:")
        found = samples(await scrape(url))
        assert value(found, "soniq_worker_capacity") == 10


def _multiproc_dir(pid: int) -> str:
    """The directory a child process was given to write its metrics to."""
    with open(f"/proc/{pid}/environ", "rb") as environ:
        variables = environ.read().split(b"\0")
    prefix = b"PROMETHEUS_MULTIPROC_DIR="
    return next(v[len(prefix) :] for v in variables if v.startswith(prefix)).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_prometheus_server_scrapes_a_worker_and_answers_queries(
    clean_db: str, db: asyncpg.Connection[Any], tmp_path: Path
) -> None:
    prometheus = require_program("prometheus", "prometheus")
    producer = make_app(clean_db, prometheus=False, traced=False)
    try:
        async with worker_process(clean_db, tmp_path / "worker.log") as (_proc, url):
            ids = [await producer.enqueue("ok") for _ in range(4)]
            await producer.enqueue("doomed")
            await wait_until(
                lambda: _done(db, done=4, dead_letter=1), timeout=30, what="jobs to finish"
            )
            trace_ids = set()
            for job_id in ids:
                job = await producer.get_job(job_id)
                assert job is not None
                trace_ids.add(job["result"]["trace_id"])

            port = _free_port()
            target = url.removeprefix("http://").removesuffix("/metrics")
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: soniq\n    static_configs:\n"
                f"      - targets: ['{target}']\n"
            )
            server = await spawn(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--enable-feature=exemplar-storage",
                ],
                tmp_path / "prometheus.log",
            )
            try:
                api = f"http://127.0.0.1:{port}/api/v1"
                async with httpx.AsyncClient(timeout=10) as client:

                    async def query(expr: str) -> dict[str, float] | None:
                        try:
                            response = await client.get(f"{api}/query", params={"query": expr})
                        except httpx.TransportError:
                            return None  # not listening yet
                        if response.status_code != 200:
                            return None
                        result = response.json()["data"]["result"]
                        return {
                            ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items())): float(
                                r["value"][1]
                            )
                            for r in result
                        }

                    async def attempts() -> dict[str, float] | None:
                        got = await query("sum by (outcome) (soniq_job_attempts_total)")
                        want = {
                            "outcome=dead_letter": 1.0,
                            "outcome=done": 4.0,
                            "outcome=retry": 1.0,
                            "outcome=snoozed": 0.0,
                            "outcome=cancelled": 0.0,
                        }
                        return got if got == want else None

                    assert await wait_until(
                        attempts,
                        timeout=60,
                        interval=0.25,
                        what="Prometheus to have scraped the counts",
                    )
                    assert await query("sum by (instance) (up{job='soniq'})") == {
                        f"instance={target}": 1.0
                    }
                    assert await query("sum(soniq_queue_jobs{state='dead_letter'})") == {"": 1.0}
                    assert await query("sum(soniq_job_duration_seconds_count)") == {"": 6.0}
                    assert await query("sum(soniq_workers_live)") == {"": 1.0}

                    # Exemplars went through Prometheus: a latency bucket links to the trace.
                    now = time.time()
                    response = await client.get(
                        f"{api}/query_exemplars",
                        params={
                            "query": "soniq_job_duration_seconds_bucket{job_name='ok'}",
                            "start": now - 600,
                            "end": now + 60,
                        },
                    )
                    stored = {
                        e["labels"]["trace_id"]
                        for series in response.json()["data"]
                        for e in series["exemplars"]
                    }
                    assert stored and stored <= trace_ids, (stored, trace_ids)
            finally:
                await stop(server)
    finally:
        await producer.close()
