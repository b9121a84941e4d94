"""The Compose stack's worker and producer, run for real (without Docker): the exact commands in
deploy/compose.yaml, against the test database, scraped over HTTP like Prometheus does.

Every metric and label that a dashboard panel, a dashboard variable or an alert rule names must
be in what they serve; the trace ids on exemplars must use the label Grafana links to Jaeger.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import asyncpg
import httpx
import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.test_deploy_queries import all_queries, problems

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DEADLINE = 90.0
OUTCOMES = {"done", "retry", "dead_letter"}

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _set_flag(args: list[str], name: str, value: str) -> list[str]:
    out = list(args)
    if name in out:
        out[out.index(name) + 1] = value
    else:
        out += [name, value]
    return out


@dataclass
class Stack:
    worker_url: str
    producer_url: str
    logs: dict[str, Path]
    procs: dict[str, subprocess.Popen[bytes]]

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"the {name} exited with {proc.returncode}\n{self.log_tail()}")

    def scrape(self, url: str, openmetrics: bool = False) -> str:
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else {}
        response = httpx.get(url, headers=headers, timeout=5)
        response.raise_for_status()
        return response.text

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
            for name, path in self.logs.items()
        )


def _truncate(url: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("TRUNCATE soniq_jobs, soniq_workers")
        finally:
            await conn.close()

    asyncio.run(go())


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose worker and producer commands, with only host, port and URLs swapped."""
    _truncate(database_url)
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    worker_port, producer_port, no_collector = _free_port(), _free_port(), _free_port()

    worker_cmd = services["worker"]["command"]
    assert worker_cmd[0] == "soniq"
    worker_cmd = _set_flag(worker_cmd, "--metrics-port", str(worker_port))
    worker_cmd = _set_flag(worker_cmd, "--metrics-host", "127.0.0.1")
    producer_cmd = services["producer"]["command"]
    assert producer_cmd[:3] == ["python", "-m", "examples.compose_app"]
    producer_cmd = _set_flag(producer_cmd, "--metrics-port", str(producer_port))
    producer_cmd = _set_flag(producer_cmd, "--metrics-host", "127.0.0.1")
    producer_cmd = _set_flag(producer_cmd, "--interval", "0.2")

    def env(service: str) -> dict[str, str]:
        merged = {**os.environ, **{k: str(v) for k, v in services[service]["environment"].items()}}
        merged["SONIQ_DATABASE_URL"] = database_url
        # Nothing listens there: exporting fails, which must never hold up a job.
        merged["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{no_collector}"
        return merged

    folder = tmp_path_factory.mktemp("compose-stack")
    logs = {"worker": folder / "worker.log", "producer": folder / "producer.log"}
    files: list[IO[bytes]] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, cmd in (
            ("worker", [sys.executable, "-m", "soniq", *worker_cmd[1:]]),
            ("producer", [sys.executable, *producer_cmd[1:]]),
        ):
            out = logs[name].open("wb")
            files.append(out)
            procs[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=env(name), stdout=out, stderr=subprocess.STDOUT
            )
        yield Stack(
            worker_url=f"http://127.0.0.1:{worker_port}/metrics",
            producer_url=f"http://127.0.0.1:{producer_port}/metrics",
            logs=logs,
            procs=procs,
        )
    finally:
        for proc in reversed(procs.values()):  # the producer first, then the worker drains
            _stop(proc)
        for f in files:
            f.close()
        _truncate(database_url)


def _exposed(text: str) -> dict[str, set[str]]:
    """Sample name -> label names, as Prometheus stores them."""
    out: dict[str, set[str]] = {}
    for family in parse_text(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def _poll(stack: Stack, check: Callable[[], tuple[bool, T]], what: str) -> T:
    """Call ``check`` until it says done (a scrape that fails counts as not yet)."""
    deadline = time.monotonic() + DEADLINE
    last: object = None
    while time.monotonic() < deadline:
        stack.check_alive()
        try:
            done, last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if done:
                return last  # type: ignore[return-value]
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last}\n{stack.log_tail()}")


def test_every_queried_metric_is_served_by_the_compose_worker_and_producer(stack: Stack) -> None:
    queries = all_queries()

    def check() -> tuple[bool, Any]:
        worker = stack.scrape(stack.worker_url)
        exposed = _exposed(worker)
        for name, labels in _exposed(stack.scrape(stack.producer_url)).items():
            exposed.setdefault(name, set()).update(labels)
        missing = problems(queries, exposed)
        # The producer's trickle reaches every outcome the dashboard colours (tick 0 enqueues
        # an order that retries into the dead-letter queue).
        outcomes = {
            sample.labels["outcome"]
            for family in parse_text(worker)
            for sample in family.samples
            if sample.name == "soniq_job_attempts_total"
        }
        missing += [f"no attempt with outcome {o}" for o in OUTCOMES - outcomes]
        return not missing, (missing or exposed)

    exposed = _poll(stack, check, "every queried metric and every outcome to be served")
    assert problems(queries, exposed) == []


def test_exemplars_carry_the_trace_id_label_grafana_links_to_jaeger(stack: Stack) -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    [prometheus] = [s for s in sources if s["type"] == "prometheus"]
    [link] = prometheus["jsonData"]["exemplarTraceIdDestinations"]

    def exemplars() -> tuple[bool, list[Any]]:
        found = [
            sample.exemplar
            for family in parse_om(stack.scrape(stack.worker_url, openmetrics=True))
            if family.name == "soniq_job_duration_seconds"
            for sample in family.samples
            if sample.exemplar is not None
        ]
        return bool(found), found

    found = _poll(stack, exemplars, "exemplars on soniq_job_duration_seconds")
    for exemplar in found:
        assert re.fullmatch(r"[0-9a-f]{32}", exemplar.labels[link["name"]]), exemplar
