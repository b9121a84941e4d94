"""deploy/ checked with the tools that run here: the official compose-spec schema, promtool, the
Kubernetes API schemas, and cross-checks between the files (ports, paths, uids, grace periods).

Docker, Jaeger and Grafana themselves do not run on the development machines or in CI.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from soniq import Settings
from tests.support.programs import require_program

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "soniq.json"
K8S_WORKER = DEPLOY / "k8s" / "worker-deployment.yaml"
COLLECTOR = DEPLOY / "otel-collector.yaml"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _run(*cmd: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    value, unit = float(match[1]), match[2]
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def _promtool() -> str:
    return require_program("promtool", "prometheus")


# -- Compose ----------------------------------------------------------------------------------


def test_compose_file_matches_the_official_compose_spec_schema() -> None:
    result = _run(
        sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", COMPOSE
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    # The same check must fail on a mistake, or the test above proves nothing.
    broken = _load(COMPOSE)
    broken["services"]["worker"]["ports"] = {"metrics": 9108}
    broken["services"]["worker"]["stop_grace_perod"] = "30s"
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(broken))
    result = _run(
        sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", bad
    )
    assert result.returncode == 1
    assert "stop_grace_perod" in result.stdout and "is not of type 'array'" in result.stdout


def test_compose_services_fit_together() -> None:
    compose = _load(COMPOSE)
    services: dict[str, Any] = compose["services"]
    assert {"postgres", "jaeger", "prometheus", "grafana", "worker", "producer", "setup"} <= set(
        services
    )
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for target in depends if isinstance(depends, list) else depends.keys():
            assert target in services, f"{name} depends on unknown service {target}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"

    # The three Soniq services run the image built from this repository.
    for name in ("setup", "worker", "producer"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
        assert services[name]["image"] == services["worker"]["image"]
    assert services["setup"]["command"] == ["soniq", "setup"]
    for name in ("worker", "producer"):
        assert services[name]["depends_on"]["setup"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["setup"]["depends_on"]["postgres"]["condition"] == "service_healthy"

    # Every Soniq process reaches the same database and sends OTLP to Jaeger's receiver.
    env = services["worker"]["environment"]
    assert env["SONIQ_DATABASE_URL"].startswith("postgresql://soniq:soniq@postgres:5432/")
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert "4317:4317" in services["jaeger"]["ports"]
    assert env["OTEL_SERVICE_NAME"] != services["producer"]["environment"]["OTEL_SERVICE_NAME"]


def test_compose_worker_serves_metrics_where_prometheus_scrapes() -> None:
    compose = _load(COMPOSE)
    worker = compose["services"]["worker"]
    args = worker["command"]
    assert args[:3] == ["soniq", "worker", "examples.compose_app:app"]
    assert _flag(args, "--metrics-host") == "0.0.0.0"  # reachable from the prometheus container
    assert _flag(args, "--instrument") == "all"
    port = int(_flag(args, "--metrics-port"))
    producer = compose["services"]["producer"]["command"]
    producer_port = int(_flag(producer, "--metrics-port"))

    config = _load(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    dns = jobs["soniq"]["dns_sd_configs"][0]
    assert dns["names"] == ["worker"] and dns["port"] == port
    assert jobs["soniq-producer"]["static_configs"][0]["targets"] == [f"producer:{producer_port}"]
    # The alert on a silent worker looks at this scrape job.
    assert 'up{job="soniq"}' in (PROMETHEUS_DIR / "alerts.yml").read_text()

    # Prometheus loads the mounted config, and keeps exemplars for the trace links.
    prom = compose["services"]["prometheus"]
    assert "./prometheus:/etc/prometheus:ro" in prom["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prom["command"]
    assert "--enable-feature=exemplar-storage" in prom["command"]


def test_compose_stop_grace_outlasts_soniqs_grace_period() -> None:
    worker = _load(COMPOSE)["services"]["worker"]
    grace = float(worker["environment"]["SONIQ_GRACE_PERIOD"])
    assert grace == Settings().grace_period
    # Grace period, then up to 5 s for cancelled jobs to unwind, then the final writes.
    assert _seconds(worker["stop_grace_period"]) >= grace + 10


def test_compose_grafana_mounts_match_its_provisioning() -> None:
    grafana = _load(COMPOSE)["services"]["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"])
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    dashboards_in_container = mounts["./grafana/dashboards"]
    provider = _load(GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml")
    assert provider["providers"][0]["options"]["path"] == dashboards_in_container
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{dashboards_in_container}/{DASHBOARD.name}"


def test_dockerfile_copies_what_exists_and_runs_the_compose_worker() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line
    cmd = next(line for line in lines if line.startswith("CMD "))
    assert json.loads(cmd[4:])[:3] == ["soniq", "worker", "examples.compose_app:app"]
    # The Kubernetes example relies on this uid for runAsNonRoot.
    assert "USER 10001" in lines


# -- Prometheus -------------------------------------------------------------------------------


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = _run(_promtool(), "check", "config", PROMETHEUS_DIR / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout + config.stderr
    rules = _run(_promtool(), "check", "rules", PROMETHEUS_DIR / "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "SUCCESS: 8 rules found" in rules.stdout + rules.stderr


def test_alert_rules_fire_as_their_unit_tests_say() -> None:
    # alerts_test.yml feeds series to each rule: first dead letter, growing backlog, no live
    # worker (also when nothing reports), old ready job, failure ratio, telemetry errors, a
    # late schedule.
    result = _run(_promtool(), "test", "rules", "alerts_test.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_unit_tests_can_fail(tmp_path: Path) -> None:
    # With the threshold of the oldest-ready-job alert raised, its unit test must fail.
    rules = (PROMETHEUS_DIR / "alerts.yml").read_text()
    assert "soniq_queue_oldest_ready_age_seconds) > 300" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(") > 300", ") > 3000"))
    shutil.copy(PROMETHEUS_DIR / "alerts_test.yml", tmp_path)
    result = _run(_promtool(), "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SoniqOldestReadyJobTooOld" in result.stdout + result.stderr


def test_every_alert_says_what_to_do() -> None:
    names = set()
    for group in _load(PROMETHEUS_DIR / "alerts.yml")["groups"]:
        for rule in group["rules"]:
            names.add(rule["alert"])
            assert rule["labels"]["severity"] in {"info", "warning", "critical"}
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    assert {
        "SoniqJobDeadLettered",
        "SoniqOldestReadyJobTooOld",
        "SoniqBacklogGrowing",
        "SoniqNoLiveWorkers",
        "SoniqFailureRatioHigh",
    } <= names


# -- Grafana ----------------------------------------------------------------------------------


def test_grafana_datasources_link_exemplars_to_jaeger() -> None:
    sources = {
        s["uid"]: s
        for s in _load(GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml")[
            "datasources"
        ]
    }
    prometheus = sources["prometheus"]
    assert prometheus["type"] == "prometheus" and prometheus["url"] == "http://prometheus:9090"
    [link] = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    assert link["datasourceUid"] in sources and sources[link["datasourceUid"]]["type"] == "jaeger"
    assert link["name"] == "trace_id"
    assert sources["jaeger"]["url"] == "http://jaeger:16686"
    assert "16686:16686" in _load(COMPOSE)["services"]["jaeger"]["ports"]


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in board["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_dashboard_json_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "soniq-overview" and board["title"] == "Soniq"
    uids = {
        s["uid"]
        for s in _load(GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml")[
            "datasources"
        ]
    }
    panels = _panels(board)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        # No two panels cover the same grid cell.
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "stat"}
        assert panel["datasource"]["uid"] in uids
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            # Quantile panels show exemplars: the dots that open a trace.
            if "histogram_quantile" in target["expr"]:
                assert target.get("exemplar") is True, panel["title"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"queue", "job_name"}
    used = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    assert "$queue" in used and "$job_name" in used


# -- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    tool = Path(sys.executable).parent / "kubernetes-validate"
    manifests = sorted((DEPLOY / "k8s").glob("*.yaml"))
    assert len(manifests) == 2
    result = _run(tool, "--strict", *manifests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == 4  # Deployment, Service, PDB, Job


def test_kubernetes_validation_rejects_a_misspelt_field(tmp_path: Path) -> None:
    text = K8S_WORKER.read_text().replace(
        "terminationGracePeriodSeconds", "terminationGraceSeconds"
    )
    bad = tmp_path / "worker.yaml"
    bad.write_text(text)
    tool = Path(sys.executable).parent / "kubernetes-validate"
    result = _run(tool, "--strict", bad)
    assert result.returncode != 0
    assert "terminationGraceSeconds" in result.stdout + result.stderr


def test_kubernetes_worker_probes_port_and_grace_period() -> None:
    docs = [d for d in yaml.safe_load_all(K8S_WORKER.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}

    grace = float(env["SONIQ_GRACE_PERIOD"]["value"])
    assert grace == Settings().grace_period
    # Kubernetes sends SIGKILL this long after SIGTERM: after Soniq's grace period, the 5 s it
    # gives cancelled jobs to unwind, and its final writes.
    assert pod["terminationGracePeriodSeconds"] >= grace + 10

    args = container["args"]
    assert container["command"] == ["soniq"] and args[0] == "worker"
    port = int(_flag(args, "--metrics-port"))
    assert _flag(args, "--metrics-host") == "0.0.0.0"  # the kubelet probes from outside the pod
    [named] = container["ports"]
    assert named == {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    for probe in ("readinessProbe", "livenessProbe"):
        check = container[probe]["httpGet"]
        assert check == {"path": "/metrics", "port": "metrics"}, probe
    assert env["SONIQ_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://otel-collector:4317"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port)
    # Rolling updates never leave the queue without a worker.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["securityContext"]["runAsUser"] == 10001


# -- OpenTelemetry Collector ------------------------------------------------------------------


def test_collector_config_receives_otlp_and_exports_to_jaeger() -> None:
    config = _load(COLLECTOR)
    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    pipelines = config["service"]["pipelines"]
    assert pipelines, "at least one pipeline"
    for name, pipeline in pipelines.items():
        assert name.split("/")[0] in {"traces", "metrics", "logs"}
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{name} uses undefined {kind[:-1]} {component}"
        assert pipeline["receivers"] and pipeline["exporters"]
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    traces = pipelines["traces"]
    # memory_limiter first and batch last, as the Collector documentation recommends.
    assert traces["processors"][0] == "memory_limiter" and traces["processors"][-1] == "batch"
    jaeger = config["exporters"]["otlp/jaeger"]
    assert "otlp/jaeger" in traces["exporters"] and jaeger["endpoint"] == "jaeger:4317"


# -- documentation ----------------------------------------------------------------------------

# Pages the other guides add; every other link must point at a file in this repository.
SIBLING_GUIDES = {
    "tracing.md",
    "metrics.md",
    "logs.md",
    "hooks-and-middleware.md",
    "reliability.md",
    "schedules.md",
}


def test_deployment_docs_link_to_files_that_exist() -> None:
    checked = 0
    for page in (ROOT / "docs" / "deployment.md", DEPLOY / "README.md"):
        for target in re.findall(r"\]\(([^)#\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://")) or target in SIBLING_GUIDES:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
            checked += 1
    assert checked >= 12
