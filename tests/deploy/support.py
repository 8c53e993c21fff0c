"""What the deploy/ tests share: paths, the metric names, and the promtool and kustomize runners.

`write_rule_file(directory)` is the one way to get a plain Prometheus rule file out of the
PrometheusRule (its `spec`), for promtool here and for a real Prometheus in other tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
MONITORING = DEPLOY / "monitoring"
PROMETHEUS_RULE = MONITORING / "prometheusrule.yaml"
RULES_TEST = MONITORING / "rules.test.yaml"
RULE_FILE_NAME = "router.rules.yaml"  # the name rules.test.yaml loads
DASHBOARD = MONITORING / "grafana-dashboard.json"

KUBERNETES_VERSION = "1.29"  # the oldest release the manifests support (native sidecars)

# SPEC §7 plus router_config_reloads_total and the edge's router_connections_*: counters with their
# _total, histograms by base name.
METRIC_NAMES = frozenset(
    {
        "router_requests_total",
        "router_request_duration_seconds",
        "router_time_to_first_token_seconds",
        "router_overhead_seconds",
        "router_upstream_attempts_total",
        "router_tokens_total",
        "router_cost_total",
        "router_rate_limited_total",
        "router_provider_up",
        "router_inflight_requests",
        "router_stream_outcomes_total",
        "router_stream_events_dropped_total",
        "router_hedges_started_total",
        "router_hedges_won_total",
        "router_idempotent_replays_total",
        "router_state_errors_total",
        "router_budget_remaining",
        "router_quota_remaining",
        "router_config_reloads_total",
        "router_connections_open",
        "router_connections_closed_total",
        "router_state_outbox_depth",
        "router_settlements_dropped_total",
        "router_settlements_recovered_total",
        "router_ledger_export_lag_seconds",
        "router_ledger_records_exported_total",
        "router_ledger_export_failures_total",
        "router_state_redis_memory_used_bytes",
        "router_state_redis_memory_max_bytes",
    }
)

CI = os.environ.get("CI", "").lower() == "true"

_METRIC = re.compile(r"\brouter_[a-z_]+")
_SERIES_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def metric_names(expr: str) -> set[str]:
    """The router metric names a PromQL expression uses, histogram series folded to their base name."""
    return {_SERIES_SUFFIX.sub("", name) for name in _METRIC.findall(expr)}


_AGGREGATION = re.compile(
    r"\b(?:sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile)\s*"
    r"(?:(?:by|without)\s*\([^()]*\)\s*)?\($"
)
_ABSENT = re.compile(r"\babsent\s*\($")


def unaggregated(expr: str) -> list[str]:
    """The router metrics `expr` selects outside any aggregation (`sum by (...) (...)`, `max(...)`;
    `absent(...)` too, which keeps no labels). Such a selection yields a series per label set,
    so a label added to a metric (`endpoint`) splits its line, or breaks the matching of a
    binary operation with another metric."""
    return [m.group() for m in _METRIC.finditer(expr) if not _aggregated(expr, m.start())]


def _aggregated(expr: str, at: int) -> bool:
    depth = 0
    for i in range(at - 1, -1, -1):
        if expr[i] == ")":
            depth += 1
        elif expr[i] == "(":
            if depth:
                depth -= 1
            elif _AGGREGATION.search(expr, 0, i + 1) or _ABSENT.search(expr, 0, i + 1):
                return True
    return False


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def rule_groups() -> list[dict[str, Any]]:
    (rule,) = load_yaml_documents(PROMETHEUS_RULE)
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def write_rule_file(directory: Path) -> Path:
    """The PrometheusRule's spec as a plain rule file, `directory / router.rules.yaml`."""
    (rule,) = load_yaml_documents(PROMETHEUS_RULE)
    path = directory / RULE_FILE_NAME
    path.write_text(yaml.safe_dump(rule["spec"], sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def promtool() -> str:
    """promtool's path; a missing promtool fails the test, it never skips it."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus (Debian's package carries it)")
    return path


def run(
    command: list[str], *, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def kustomize_command() -> list[str]:
    """`kustomize build` or `kubectl kustomize`. The issue asks for kustomize builds "if kustomize is
    available": skipped, and said so, when neither exists (Debian has no current package of either;
    the manifests themselves are still validated file by file)."""
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed, so the kustomize builds are not checked")


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = run([*kustomize_command(), str(directory)])
    assert result.returncode == 0, f"kustomize build {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]
