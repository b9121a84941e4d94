"""Shared by the soniq_prom tests (it holds no tests): the app that real worker processes run
(``tests.test_prom_support:app``), a way to start such a process, and exposition readers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from asyncio.subprocess import Process
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from soniq import JobContext, Soniq
from soniq_otel import OtelConfig
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
APP_PATH = "tests.test_prom_support:app"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def tracing(provider: TracerProvider | None = None) -> OtelConfig:
    """Soniq's tracing layer on a provider of our own (not the global one, which other tests
    may set): spans are sampled and ended, and exported nowhere unless the caller says."""
    return OtelConfig(tracer_provider=provider or TracerProvider())


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def make_app(
    database_url: str | None = None,
    *,
    prometheus: Any = True,
    traced: bool = True,
    **settings: Any,
) -> Soniq:
    """Jobs with every outcome; the same names in the test process and the worker process."""
    app = Soniq(database_url, **settings)

    @app.job(name="ok")
    async def ok() -> dict[str, Any]:
        return {"pid": os.getpid(), "trace_id": current_trace_id()}

    @app.job(name="slow")
    async def slow(seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()

    @app.job(name="flaky", retry_backoff=0.05)
    async def flaky(job: JobContext) -> int:
        if job.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return job.attempt

    @app.job(name="doomed", max_retries=1, retry_backoff=0.05)
    async def doomed() -> None:
        raise RuntimeError("every attempt fails")

    @app.job(name="fanout")
    async def fanout(n: int) -> None:
        await app.enqueue_many("ok", [{} for _ in range(n)])

    if traced:
        app.instrument(otel=tracing())
    if prometheus:
        app.instrument(prometheus=prometheus)
    return app


# What `soniq worker tests.test_prom_support:app` runs; its database comes from the environment.
app = make_app()


# -- reading an exposition ---------------------------------------------------------------------
def samples(text: str, *, openmetrics: bool = False) -> list[Sample]:
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    return [s for family in parse(text) for s in family.samples]


def value(found: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum over the samples named ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for s in found
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def scrape(url: str, *, openmetrics: bool = False) -> str:
    headers = {"Accept": OPENMETRICS} if openmetrics else {}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url, headers=headers)
    response.raise_for_status()
    return response.text


# -- a real worker process -----------------------------------------------------------------
_URL = re.compile(r"Prometheus metrics.* on (http://\S+/metrics)")


def served_url(log: Path) -> str | None:
    found = _URL.search(log_text(log))
    return found.group(1) if found else None


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


@asynccontextmanager
async def worker_process(
    database_url: str,
    log: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port_flag: bool = True,
) -> AsyncIterator[tuple[Process, str]]:
    """``soniq worker tests.test_prom_support:app --metrics-port 0 ARGS`` in a process of its
    own; yields it and the metrics URL it logged. Stopped with SIGTERM at exit."""
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SONIQ_", "PROMETHEUS_"))},
        "SONIQ_DATABASE_URL": database_url,
        "SONIQ_POLL_INTERVAL": "0.5",
        "SONIQ_LEASE_SECONDS": "10",
        "SONIQ_GRACE_PERIOD": "5",
        **(env or {}),
    }
    proc = await spawn(
        [
            sys.executable,
            "-m",
            "soniq",
            "--log-level",
            "INFO",
            "worker",
            APP_PATH,
            *(["--metrics-port", "0"] if port_flag else []),
            *args,
        ],
        log,
        cwd=ROOT,
        env=environment,
    )
    try:
        await wait_until(
            lambda: served_url(log) or proc.returncode is not None,
            timeout=30,
            what="the worker to log its metrics address",
        )
        url = served_url(log)
        assert url is not None, f"worker exited ({proc.returncode}):\n{log_text(log)}"
        yield proc, url
    finally:
        await stop(proc)


async def spawn(command: Sequence[str], log: Path, **options: Any) -> Process:
    """Start ``command`` with its output going to ``log``."""
    with log.open("wb") as out:
        return await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=asyncio.subprocess.STDOUT, **options
        )


async def stop(proc: Process, others: Sequence[int] = ()) -> int:
    """SIGTERM and wait; kill (it and ``others``) if it will not go."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 30)
    except asyncio.TimeoutError:
        for pid in (proc.pid, *others):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return await asyncio.wait_for(proc.wait(), 10)
