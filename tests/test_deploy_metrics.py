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

from tests.support.programs import require_program
from tests.test_deploy_queries import all_queries, dashboard_queries, problems

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
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


# -- a real Prometheus scraping them, with deploy/'s rules ------------------------------------

# Grafana's macros and variables, as Grafana would fill them in for "All" over a short range.
GRAFANA_VALUES = {
    "$__rate_interval": "15s",
    "$__interval": "15s",
    "$__range": "5m",
    "$queue": ".*",
    "$job_name": ".*",
}


@pytest.fixture(scope="module")
def prometheus(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Debian's Prometheus server with deploy/prometheus/prometheus.yml and alerts.yml, its
    targets pointed at the stack's worker and producer, scraping and evaluating every second."""
    # Looked for before the stack starts: without the program these tests skip at once.
    binary = require_program("prometheus", "prometheus")
    stack: Stack = request.getfixturevalue("stack")
    folder = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / name) for name in config["rule_files"]]
    targets = {"soniq": stack.worker_url, "soniq-producer": stack.producer_url}
    for job in config["scrape_configs"]:
        # Same job names, relabelling and rules; only the service discovery differs from Docker.
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": [targets[job["job_name"]].split("/")[2]]}]
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={folder / 'prometheus.yml'}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.procs["prometheus"] = proc
    stack.logs["prometheus"] = folder / "prometheus.log"
    try:
        _poll(
            stack,
            lambda: (httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, None),
            "Prometheus to be ready",
        )
        yield url
    finally:
        del stack.procs["prometheus"]
        _stop(proc)
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    body = httpx.get(f"{url}/api/v1/{path}", params=params, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]


def test_a_real_prometheus_answers_every_dashboard_query(stack: Stack, prometheus: str) -> None:
    exprs = {}
    for query in dashboard_queries():
        if query.variable_label is None:
            expr = query.expr
            for macro, value in GRAFANA_VALUES.items():
                expr = expr.replace(macro, value)
            exprs[query.where] = expr

    def check() -> tuple[bool, list[str]]:
        empty = [
            f"{where}: {expr}"
            for where, expr in exprs.items()
            if not _api(prometheus, "query", query=expr)["result"]
        ]
        return not empty, empty

    _poll(stack, check, "every dashboard query to return data")


def test_a_real_prometheus_loads_the_rules_and_fires_on_the_dead_letter(
    stack: Stack, prometheus: str
) -> None:
    groups = _api(prometheus, "rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert len(rules) == 8

    def firing() -> tuple[bool, Any]:
        rules = {r["name"]: r for g in _api(prometheus, "rules")["groups"] for r in g["rules"]}
        # Evaluated without errors (a many-to-many match or a bad function would show here).
        broken = {name: r.get("lastError") for name, r in rules.items() if r["health"] != "ok"}
        alerts = _api(prometheus, "alerts")["alerts"]
        dead = [
            a
            for a in alerts
            if a["labels"]["alertname"] == "SoniqJobDeadLettered" and a["state"] == "firing"
        ]
        return not broken and bool(dead), (broken, dead, alerts)

    _, dead, alerts = _poll(stack, firing, "SoniqJobDeadLettered to fire")
    assert {a["labels"]["job_name"] for a in dead} == {"orders.process"}
    # The stack is healthy otherwise: a live worker, nothing old in the queues.
    quiet = {
        "SoniqNoLiveWorkers",
        "SoniqWorkerMetricsDown",
        "SoniqOldestReadyJobTooOld",
        "SoniqScheduleLate",
    }
    assert not [a for a in alerts if a["labels"]["alertname"] in quiet]


def test_a_real_prometheus_stores_exemplars_that_name_a_trace(
    stack: Stack, prometheus: str
) -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    [source] = [s for s in sources if s["type"] == "prometheus"]
    [link] = source["jsonData"]["exemplarTraceIdDestinations"]

    def stored() -> tuple[bool, list[Any]]:
        now = time.time()
        data = _api(
            prometheus,
            "query_exemplars",
            query="soniq_job_duration_seconds_bucket",
            start=str(now - 300),
            end=str(now),
        )
        found = [e for series in data for e in series["exemplars"]]
        return bool(found), found

    exemplars = _poll(stack, stored, "Prometheus to store exemplars")
    for exemplar in exemplars:
        assert re.fullmatch(r"[0-9a-f]{32}", exemplar["labels"][link["name"]]), exemplar
