"""Shared plumbing: fresh databases, statistics, the worker-process protocol, and the timed
drain the overhead scripts (chain_overhead, otel_overhead, prom_overhead) share."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tests.support import pg

if TYPE_CHECKING:  # worker processes of the other systems need not import Soniq
    from soniq import Soniq

# Worker processes run from the repository root, so ``-m bench.worker`` imports this package.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

# The job every system runs: keyword payload {"i": n} for throughput runs, {"t": epoch} for
# latency runs (the worker records time.time() - t when the job starts).
SYSTEMS = ("soniq", "pgqueuer", "minimal")


def admin_url() -> str:
    return os.environ.get("BENCH_DATABASE_URL") or os.environ.get(
        "SONIQ_TEST_DATABASE_URL", DEFAULT_ADMIN_URL
    )


async def create_database(admin: str, prefix: str) -> str:
    """A fresh database for one system, made the same way the test suite makes its own."""
    return await pg.create_database(admin, prefix=f"bench_{prefix}")


async def drop_database(admin: str, url: str) -> None:
    await pg.drop_database(admin, url)


@dataclass(frozen=True)
class Drain:
    """One timed drain: wall-clock seconds of the worker's run, and this process's CPU seconds
    over the same span (other load on the machine moves CPU time far less than wall time)."""

    seconds: float
    cpu_seconds: float


async def drain(
    app: Soniq,
    job: str,
    jobs: int,
    concurrency: int,
    *,
    args: Callable[[int], dict[str, Any]],
    loader: Soniq | None = None,
    collect_garbage: bool = False,
) -> Drain:
    """Empty the job tables, queue ``jobs`` jobs of ``job`` (``args(i)`` are job i's keyword
    arguments; not timed), then time one ``run_once`` worker of ``app`` draining them, and check
    every job is done.

    The jobs are queued in ``enqueue_many`` calls of up to 1000, through ``loader`` if given
    (so the measured app's pool does no extra work), else through ``app`` itself (so its
    enqueue layers see them: one send span per call when tracing), and the table analysed.
    ``collect_garbage`` starts the clock without garbage left from queueing or the last
    drain."""
    source = app if loader is None else loader
    pool = await source.pool()
    await pool.execute("TRUNCATE soniq_jobs, soniq_workers")
    for start in range(0, jobs, 1000):
        await source.enqueue_many(job, [args(i) for i in range(start, min(jobs, start + 1000))])
    # What autovacuum does in production: the planner sees the table as it now is (a server
    # with autovacuum off, like a test machine's, would otherwise plan for an empty one).
    await pool.execute("ANALYZE soniq_jobs")
    if collect_garbage:
        gc.collect()
    worker = app.worker(concurrency=concurrency, run_once=True, install_signal_handlers=False)
    started, cpu_started = time.perf_counter(), time.process_time()
    await worker.run()
    result = Drain(time.perf_counter() - started, time.process_time() - cpu_started)
    done = await pool.fetchval("SELECT count(*) FROM soniq_jobs WHERE status = 'done'")
    if done != jobs:
        raise RuntimeError(f"expected {jobs} jobs done, found {done}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass
class WorkerProcess:
    """One worker subprocess speaking the bench line protocol on stdin/stdout:
    it prints READY once set up, starts on GO, stops on STOP (serve mode) and ends with one
    RESULT line of JSON."""

    args: list[str]
    proc: asyncio.subprocess.Process | None = None
    result: dict[str, Any] = field(default_factory=dict)
    stderr_tail: str = ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.worker",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )

    async def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not raw:
            await self._fail("exited early")
        return raw.decode().strip()

    async def _fail(self, what: str) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        err = (await self.proc.stderr.read()).decode()
        raise RuntimeError(f"bench worker {' '.join(self.args)} {what}:\n{err[-3000:]}")

    async def wait_ready(self, timeout: float = 60.0) -> None:
        while True:
            line = await self._line(timeout)
            if line == "READY":
                return

    def send(self, word: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((word + "\n").encode())

    async def finish(self, timeout: float = 600.0) -> dict[str, Any]:
        while True:
            line = await self._line(timeout)
            if line.startswith("RESULT "):
                self.result = json.loads(line[len("RESULT ") :])
                break
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), 30)
        return self.result

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def emit(word: str, payload: dict[str, Any] | None = None) -> None:
    """Worker side of the protocol."""
    line = word if payload is None else f"{word} {json.dumps(payload)}"
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_word(reader: asyncio.StreamReader) -> str:
    return (await reader.readline()).decode().strip()


async def stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


def now() -> float:
    """A clock shared by all processes on this machine (CLOCK_MONOTONIC)."""
    return time.monotonic()
