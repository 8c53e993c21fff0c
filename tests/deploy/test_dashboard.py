"""The Grafana dashboard: well-formed, queries that parse, and only metrics router exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from router import metrics
from tests.deploy.support import (
    DASHBOARD,
    METRIC_NAMES,
    MONITORING,
    kustomize_build,
    metric_names,
    promtool,
    run,
    unaggregated,
)

# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "$namespace": ".*",
    "$job": ".*",
    "$exporter": "router-ledger-export",
}
COUNTER_OR_BUCKET = re.compile(r"_(total|bucket|sum|count)$")
# What only `router ledger export` measures. The serving replicas report its gauges too, as 0: a panel
# that let them in would show "no lag" with the exporter gone.
EXPORTER_METRICS = frozenset(
    {
        "router_ledger_export_lag_seconds",
        "router_ledger_records_exported_total",
        "router_ledger_export_failures_total",
        "router_state_redis_memory_used_bytes",
        "router_state_redis_memory_max_bytes",
    }
)
_SELECTION = re.compile(r"\b(router_[a-z_]+)(\{[^}]*\})?")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def expressions() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def row(title: str) -> list[dict[str, Any]]:
    """The panels under a (not collapsed) row: those after it, up to the next row."""
    under: list[dict[str, Any]] | None = None
    for p in dashboard()["panels"]:
        if p["type"] == "row":
            if under is not None:
                break
            if p["title"] == title:
                under = []
        elif under is not None:
            under.append(p)
    assert under, f"no panels under a row {title!r}"
    return under


def test_every_panel_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"]
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "namespace", "job", "exporter"}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in board["panels"]:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, p["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    for p in panels():
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        assert p.get("description"), p["title"]


def test_panels_use_only_exported_metrics_and_all_of_them() -> None:
    used: set[str] = set()
    for title, expr in expressions():
        names = metric_names(expr)
        assert names, f"{title}: no router metric in {expr}"
        assert names <= METRIC_NAMES, f"{title} uses {sorted(names - METRIC_NAMES)}"
        used |= names
    assert used == METRIC_NAMES, f"no panel shows {sorted(METRIC_NAMES - used)}"


def test_every_metric_is_aggregated_so_a_new_label_splits_no_panel() -> None:
    for title, expr in expressions():
        assert not unaggregated(expr), f"{title}: {unaggregated(expr)} not aggregated in {expr}"


def test_traffic_by_endpoint_shows_requests_duration_tokens_and_ttft_per_endpoint() -> None:
    under = row("Traffic by endpoint")
    shown: set[str] = set()
    for p in under:
        for t in p["targets"]:
            assert re.search(r"\bby \((?:[a-z]+, )*endpoint\b", t["expr"]), f"{p['title']}: {t['expr']}"
            assert "{{endpoint}}" in t["legendFormat"], p["title"]
            shown |= metric_names(t["expr"])
    assert shown == {
        "router_requests_total",
        "router_request_duration_seconds",
        "router_tokens_total",
        "router_time_to_first_token_seconds",
    }
    (requests,) = [p for p in under if metric_names(p["targets"][0]["expr"]) == {"router_requests_total"}]
    classes = [re.search(r'code=~"(.)\.\."', t["expr"]) for t in requests["targets"]]
    assert {c[1] for c in classes if c} == {"2", "4", "5"}
    quantiles = {
        (name, q)
        for p in under
        for t in p["targets"]
        for q in re.findall(r"histogram_quantile\(([0-9.]+)", t["expr"])
        for name in metric_names(t["expr"])
    }
    assert quantiles == {
        ("router_request_duration_seconds", "0.5"),
        ("router_request_duration_seconds", "0.95"),
        ("router_time_to_first_token_seconds", "0.95"),
    }


def test_exporter_metrics_are_read_from_the_exporter_job() -> None:
    for title, expr in expressions():
        for name, labels in _SELECTION.findall(expr):
            if name in EXPORTER_METRICS:
                assert 'job=~"$exporter"' in labels, f"{title}: {name} not selected by the exporter's job"
            else:
                assert 'job=~"$job"' in labels, f"{title}: {name} not selected by the replicas' job"


def test_rate_and_increase_only_on_counters() -> None:
    for title, expr in expressions():
        for fn, name in re.findall(r"\b(rate|increase)\((router_[a-z_]+)", expr):
            assert COUNTER_OR_BUCKET.search(name), f"{title}: {fn}() of the gauge {name}"


def test_every_query_parses(tmp_path: Path) -> None:
    """Each query, with Grafana's variables filled in, as a recording rule: promtool parses the PromQL."""
    rules = []
    for i, (_title, expr) in enumerate(expressions()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable the test does not know: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = run([promtool(), "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def _exported_name(family_name: str, family_type: str) -> str:
    return f"{family_name}_total" if family_type == "counter" else family_name


def test_metric_list_matches_router_metrics() -> None:
    """The names above are what router exports: its NAMES tuple if it has one, and its registry."""
    names = getattr(metrics, "NAMES", None)
    if names is not None:
        strip = re.compile(r"_total$")
        assert {strip.sub("", n) for n in names} == {strip.sub("", n) for n in METRIC_NAMES}
    registry = getattr(metrics, "REGISTRY", None)
    if registry is None:
        pytest.fail("router.metrics has no REGISTRY to read the exported names from")
    exported = {_exported_name(f.name, f.type) for f in registry.collect() if f.name.startswith("router_")}
    assert exported, "router.metrics registers no router_ metric"
    assert exported <= METRIC_NAMES, f"exported but unknown to deploy/: {sorted(exported - METRIC_NAMES)}"


def test_dashboard_configmap_for_grafana() -> None:
    docs = kustomize_build(MONITORING)
    (configmap,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["router.json"]) == dashboard()
