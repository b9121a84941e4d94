"""Every PromQL query in the dashboard and the alert rules, parsed, with what each one names.

The helpers here also serve tests/test_deploy_metrics.py, which compares the same queries with
what a real worker serves; the tests here compare them with the documented metric names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "soniq.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"

# Grafana's macros are not PromQL; stand-ins of the same kind keep the parser honest.
GRAFANA_MACROS = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
}
LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>[a-zA-Z_]\w*)\s*\)\s*$")

# Series Prometheus makes itself, and labels it adds to every scraped series.
PROMETHEUS_SERIES = {"up"}
TARGET_LABELS = {"job", "instance", "role"}


@dataclass
class Query:
    where: str
    expr: str
    metrics: set[str] = field(default_factory=set)
    # (metric, label) pairs used in a selector's matchers.
    matched: set[tuple[str, str]] = field(default_factory=set)
    # (labels grouped by, metrics under that aggregation).
    groupings: list[tuple[set[str], set[str]]] = field(default_factory=list)
    # label_values(selector, label): the label must exist on the selector's metric.
    variable_label: str | None = None


def _expand_macros(expr: str) -> str:
    for macro, value in GRAFANA_MACROS.items():
        expr = expr.replace(macro, value)
    return expr


def _selectors(node: Any) -> Iterator[Any]:
    found: list[Any] = []

    def visit(n: Any) -> bool:
        if isinstance(n, promql_parser.VectorSelector):
            found.append(n)
        return True

    promql_parser.walk(node, visit)
    return iter(found)


def _metric_name(selector: Any) -> str | None:
    if selector.name:
        return str(selector.name)
    for m in selector.matchers.matchers:
        if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal:
            return str(m.value)
    return None


def analyse(where: str, expr: str) -> Query:
    """Parse ``expr`` (raising on a syntax error) and record what it names."""
    query = Query(where=where, expr=expr)
    text = _expand_macros(expr)
    variable = LABEL_VALUES.match(text)
    if variable:
        text = variable["selector"]
        query.variable_label = variable["label"]
    ast = promql_parser.parse(text)
    for sel in _selectors(ast):
        name = _metric_name(sel)
        if name is None:
            raise AssertionError(f"{where}: a selector without a metric name in {expr!r}")
        query.metrics.add(name)
        for m in sel.matchers.matchers:
            if m.name != "__name__":
                query.matched.add((name, m.name))

    def visit(n: Any) -> bool:
        if (
            isinstance(n, promql_parser.AggregateExpr)
            and n.modifier is not None
            and n.modifier.type == promql_parser.AggModifierType.By
        ):
            inner = {_metric_name(s) or "" for s in _selectors(n.expr)}
            query.groupings.append((set(n.modifier.labels), inner))
        return True

    promql_parser.walk(ast, visit)
    return query


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    board = json.loads(path.read_text())
    out: list[Query] = []

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for panel in panels(board["panels"]):
        for target in panel.get("targets", []):
            out.append(analyse(f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            out.append(analyse(f"variable {var['name']}", q["query"] if isinstance(q, dict) else q))
    return out


def alert_queries(path: Path = ALERTS) -> list[Query]:
    rules = yaml.safe_load(path.read_text())
    return [
        analyse(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"])
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def all_queries() -> list[Query]:
    return dashboard_queries() + alert_queries()


def problems(queries: list[Query], exposed: dict[str, set[str]]) -> list[str]:
    """What the queries name that ``exposed`` (sample name -> its label names) lacks."""
    found: list[str] = []
    for q in queries:
        for metric in sorted(q.metrics - PROMETHEUS_SERIES):
            if metric not in exposed:
                found.append(f"{q.where}: metric {metric} is not exposed")
        for metric, label in sorted(q.matched):
            if metric in exposed and label not in exposed[metric] | TARGET_LABELS:
                found.append(f"{q.where}: {metric} has no label {label!r}")
        for labels, metrics in q.groupings:
            available = set(TARGET_LABELS)
            for metric in metrics:
                available |= exposed.get(metric, set())
            missing = labels - available
            if missing and all(m in exposed for m in metrics):
                found.append(f"{q.where}: grouped by {sorted(missing)} that {sorted(metrics)} lack")
        if q.variable_label is not None:
            labels = set().union(*(exposed.get(m, set()) for m in q.metrics))
            if q.variable_label not in labels:
                found.append(f"{q.where}: label_values of missing label {q.variable_label!r}")
    return found


# -- static checks: every query parses and names only the documented metrics -----------------

# DEVELOPERS.md, "Names other parts rely on": what soniq_prom exposes, with its labels. A
# histogram is exposed as _bucket (with le), _sum and _count samples.
DOCUMENTED: dict[str, set[str]] = {
    "soniq_jobs_enqueued_total": {"queue", "job_name"},
    "soniq_job_attempts_total": {"queue", "job_name", "outcome"},
    "soniq_jobs_in_progress": {"queue", "job_name"},
    "soniq_worker_capacity": set(),
    "soniq_telemetry_errors_total": set(),
    "soniq_queue_jobs": {"queue", "state"},
    "soniq_queue_oldest_ready_age_seconds": {"queue"},
    "soniq_workers_live": set(),
    "soniq_schedule_fires_total": {"schedule", "result"},
    "soniq_schedule_last_fire_timestamp_seconds": {"schedule"},
    "soniq_schedule_next_fire_timestamp_seconds": {"schedule"},
}
for _histogram in ("soniq_job_duration_seconds", "soniq_job_queue_wait_seconds"):
    DOCUMENTED[f"{_histogram}_bucket"] = {"queue", "job_name", "le"}
    DOCUMENTED[f"{_histogram}_sum"] = {"queue", "job_name"}
    DOCUMENTED[f"{_histogram}_count"] = {"queue", "job_name"}


def test_every_dashboard_and_rule_query_parses_and_names_documented_metrics() -> None:
    queries = all_queries()
    # Every panel target, both variables and every alert rule.
    assert len(dashboard_queries()) >= 20
    assert len(alert_queries()) == 8
    assert problems(queries, DOCUMENTED) == []


def test_the_dashboard_covers_what_the_issue_asks_for() -> None:
    named = set().union(*(q.metrics for q in dashboard_queries()))
    for metric in (
        "soniq_job_attempts_total",  # throughput by outcome
        "soniq_job_duration_seconds_bucket",  # p50/p95/p99 duration
        "soniq_job_queue_wait_seconds_bucket",  # p50/p95/p99 queue wait
        "soniq_queue_jobs",  # backlog per queue
        "soniq_queue_oldest_ready_age_seconds",  # oldest-job age per queue
        "soniq_workers_live",  # workers
        "soniq_schedule_fires_total",  # schedules: fires by result
        "soniq_schedule_next_fire_timestamp_seconds",  # schedules: late or not
    ):
        assert metric in named, metric
    board = json.loads(DASHBOARD.read_text())
    quantiles = [
        t["expr"]
        for p in board["panels"]
        for t in p.get("targets", [])
        if "histogram_quantile" in t["expr"]
    ]
    for metric in ("soniq_job_duration_seconds_bucket", "soniq_job_queue_wait_seconds_bucket"):
        mine = [e for e in quantiles if metric in e]
        assert {e.split(",")[0] for e in mine} == {
            "histogram_quantile(0.5",
            "histogram_quantile(0.95",
            "histogram_quantile(0.99",
        }
        # Per job name, over buckets.
        assert all("by (le, job_name)" in e for e in mine)


def test_the_checker_catches_unknown_metrics_labels_and_groupings() -> None:
    bad = [
        analyse("typo", "sum(rate(soniq_job_attempt_total[5m]))"),
        analyse("label", 'soniq_queue_jobs{status="ready"}'),
        analyse("grouping", "sum by (worker) (soniq_jobs_in_progress)"),
        analyse("variable", "label_values(soniq_queue_jobs, job_name)"),
    ]
    found = problems(bad, DOCUMENTED)
    assert len(found) == 4, found
    assert "soniq_job_attempt_total is not exposed" in found[0]
    assert "no label 'status'" in found[1]
    assert "grouped by ['worker']" in found[2]
    assert "label_values of missing label 'job_name'" in found[3]
    try:
        analyse("syntax", "sum(rate(soniq_jobs_enqueued_total[5m])")
    except ValueError:
        pass
    else:
        raise AssertionError("an unbalanced parenthesis must not parse")
