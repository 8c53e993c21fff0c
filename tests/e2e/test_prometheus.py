"""A real Prometheus (Debian's) scrapes a running router with the alert rules of deploy/: with
one simulated provider failing, the provider-down alert fires, and the request counters in
Prometheus match what the test sent.

The rules are the PrometheusRule's own, with each `for:` shortened to 1s so the test takes
seconds, not minutes: the expressions are exactly what ships.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from router.sim import SimServer
from tests.conftest import RouterThread, provider_yaml
from tests.deploy.support import rule_groups
from tests.e2e.conftest import free_port, stop

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]


def prometheus_path() -> str:
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("prometheus is not installed: apt-get install -y prometheus", pytrace=False)
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """prometheus(target) starts a Prometheus scraping `host:port` every second; returns its URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        groups = rule_groups()
        for group in groups:
            group["interval"] = "1s"
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "1s"
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": [target]}]}],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        with (tmp_path / "prometheus.log").open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [
                    prometheus_path(),
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)

    yield start
    for process in started:
        stop(process)


def query(url: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(url + "/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]  # type: ignore[no-any-return]


def wait_for(what: str, check: Callable[[], bool], *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_prometheus_sees_the_failing_provider_alert_and_the_exact_request_count(
    sim: Sim, router: Router, prometheus: Callable[[str], str]
) -> None:
    good, bad = sim("trinity"), sim("real200", faults="status=500")
    r = router(
        "routing: {strategy: ordered, breaker: {failures: 2, cooldown: 5m}}\nproviders:\n"
        + provider_yaml("failing", bad, ["gpt-4o"], priority="1")
        + provider_yaml("healthy", good, ["gpt-4o"], priority="2")
    )
    url = prometheus(f"127.0.0.1:{r.port}")
    sent = 25
    for _ in range(sent):
        answer = httpx.post(
            r.url + "/v1/chat/completions",
            json={"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]},
            timeout=10,
        )
        assert answer.status_code == 200  # the healthy provider answers every one

    def firing() -> bool:
        alerts = httpx.get(url + "/api/v1/alerts").json()["data"]["alerts"]
        return any(
            a["labels"]["alertname"] == "RouterProviderDown"
            and a["labels"].get("provider") == "failing"
            and a["state"] == "firing"
            for a in alerts
        )

    wait_for("RouterProviderDown{provider=failing} to fire", firing)
    alerts = httpx.get(url + "/api/v1/alerts").json()["data"]["alerts"]
    assert not any(a["labels"].get("provider") == "healthy" for a in alerts)

    def counted() -> bool:
        # Only this router's series: the registry is the test process's, shared with other tests.
        result = query(url, 'sum(router_requests_total{code="200",provider="healthy"})')
        return bool(result) and float(result[0]["value"][1]) == sent

    wait_for(f"Prometheus to count {sent} requests", counted)
    by_provider = {
        s["metric"]["provider"]: float(s["value"][1])
        for s in query(url, 'sum by (provider) (router_requests_total{provider=~"healthy|failing"})')
    }
    assert by_provider == {"healthy": sent}  # every answer came from the healthy one
    failed = query(url, 'sum(router_upstream_attempts_total{provider="failing",outcome="server_error"})')
    assert float(failed[0]["value"][1]) == 2  # then the breaker opened and no more were sent
