"""The alert rules: promtool accepts them, and their unit tests (deploy/monitoring/rules.test.yaml) pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tests.deploy.support import (
    METRIC_NAMES,
    PROMETHEUS_RULE,
    RULE_FILE_NAME,
    RULES_TEST,
    load_yaml_documents,
    metric_names,
    promtool,
    rule_groups,
    run,
    unaggregated,
    write_rule_file,
)

ALERTS = {
    "RouterProviderDown",
    "RouterErrorRatioHigh",
    "RouterKeyQuotaExhausted",
    "RouterClientBudgetNearlySpent",
    "RouterRedisDegraded",
    "RouterOverheadP99High",
    "RouterConfigReloadFailed",
    "RouterSettlementsDropped",
    "RouterOutboxNotDraining",
    "RouterLedgerExportLagging",
    "RouterLedgerExportFailing",
    "RouterLedgerExportDown",
    "RouterRedisMemoryHigh",
}


def test_promtool_check_rules(tmp_path: Path) -> None:
    rule_file = write_rule_file(tmp_path)
    result = run([promtool(), "check", "rules", str(rule_file)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules(tmp_path: Path) -> None:
    write_rule_file(tmp_path)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    result = run([promtool(), "test", "rules", RULES_TEST.name], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_one_group_named_router_with_every_alert() -> None:
    (rule,) = load_yaml_documents(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    groups = rule_groups()
    assert [group["name"] for group in groups] == ["router"]
    rules = groups[0]["rules"]
    assert {r["alert"] for r in rules} == ALERTS
    for r in rules:
        assert r["labels"]["severity"] in {"critical", "warning", "info"}, r["alert"]
        assert r["annotations"].get("summary"), r["alert"]
        assert r["annotations"].get("description"), r["alert"]


def test_rules_use_only_exported_metrics() -> None:
    for r in rule_groups()[0]["rules"]:
        used = metric_names(r["expr"])
        assert used, r["alert"]
        assert used <= METRIC_NAMES, f"{r['alert']} uses {sorted(used - METRIC_NAMES)}"


def test_every_metric_is_aggregated_so_a_new_label_breaks_no_alert() -> None:
    # An alert over a metric's raw series would fire once per endpoint, client ..., or match
    # nothing in a ratio of two metrics whose labels differ.
    for r in rule_groups()[0]["rules"]:
        assert not unaggregated(r["expr"]), f"{r['alert']}: {unaggregated(r['expr'])} not aggregated"


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULE_FILE_NAME]
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS
