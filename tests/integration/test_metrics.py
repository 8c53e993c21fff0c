"""SPEC §7 metrics, fed by the code paths that know the facts, scraped from /metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from router import metrics
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello"}]
SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(r: RouterThread) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(r.url + "/metrics").text
    found = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            found[match["name"], labels] = float(match["value"])
    return found


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str
) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def chat(r: RouterThread, **body: Any) -> httpx.Response:
    return httpx.post(
        r.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-4o", "messages": HELLO, **body},
        timeout=10,
    )


def test_request_attempt_token_and_stream_metrics(sim: Sim, router: Router) -> None:
    good, bad = sim("trinity"), sim("real200", faults="status=500")
    price = "{price: {input: 1000, output: 2000}}"
    r = router(
        "clients:\n  - name: team\n    key: " + CLIENT_KEY + "\n    limits: {rpm: 5}\n"
        "routing: {strategy: ordered}\nproviders:\n"
        + provider_yaml("bad", bad, {"gpt-4o": price}, priority="1")
        + provider_yaml("good", good, {"gpt-4o": price}, priority="2")
    )
    before = scrape(r)
    assert chat(r).status_code == 200  # bad fails, good answers
    assert chat(r, stream=True).status_code == 200
    assert chat(r, model="no-such-model").status_code == 404
    for _ in range(4):  # the 4th is over rpm 5 (a 404 takes nothing from the window)
        chat(r)
    after = scrape(r)

    def delta(metric: str, /, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    assert (
        delta(
            "router_requests_total",
            client="team",
            model="gpt-4o",
            provider="good",
            endpoint="chat",
            code="200",
        )
        == 5
    )
    assert (
        delta("router_requests_total", client="team", model="", provider="", endpoint="chat", code="404") == 1
    )
    assert (
        delta(
            "router_requests_total", client="team", model="gpt-4o", provider="", endpoint="chat", code="429"
        )
        == 1
    )
    assert delta("router_upstream_attempts_total", provider="bad", outcome="server_error") >= 1
    assert delta("router_upstream_attempts_total", provider="good", outcome="ok") == 5
    assert delta("router_stream_outcomes_total", outcome="completed") == 1
    assert delta("router_rate_limited_total", scope="client", name="team", limit="rpm") == 1
    tokens = {"client": "team", "model": "gpt-4o", "provider": "good", "endpoint": "chat"}
    prompt = delta("router_tokens_total", **tokens, type="prompt")
    completion = delta("router_tokens_total", **tokens, type="completion")
    assert prompt > 0 and completion > 0
    cost = delta("router_cost_total", client="team", model="gpt-4o", provider="good")
    assert abs(cost - (prompt * 1000 + completion * 2000) / 1e6) < 1e-9
    served = {"model": "gpt-4o", "provider": "good", "endpoint": "chat"}
    assert delta("router_request_duration_seconds_count", **served) == 5
    assert delta("router_time_to_first_token_seconds_count", **served) == 1
    assert delta("router_overhead_seconds_count") == 7
    names = {name for name, _ in after}
    assert not any("no-such-model" in str(labels) for _, labels in after)  # never a label
    for name in metrics.NAMES:
        text = httpx.get(r.url + "/metrics").text
        assert f"# HELP {name.removesuffix('_total')}" in text, name
    assert "router_requests_total" in names


def test_provider_up_and_inflight_gauges_follow_health(sim: Sim, router: Router) -> None:
    bad = sim("trinity", faults="status=500")
    r = router(
        "routing: {breaker: {failures: 1, cooldown: 60s}}\nproviders:\n"
        + provider_yaml("bad", bad, ["gpt-4o"]),
    )
    deadline = time.monotonic() + 5
    while value(scrape(r), "router_provider_up", provider="bad", key="bad-0") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (
        httpx.post(
            r.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}, timeout=10
        ).status_code
        == 502
    )
    while value(scrape(r), "router_provider_up", provider="bad", key="bad-0") != 0:
        assert time.monotonic() < deadline + 5
        time.sleep(0.2)
    assert value(scrape(r), "router_inflight_requests", provider="bad") == 0


def test_replays_are_counted(sim: Sim, router: Router) -> None:
    server = sim("trinity")
    r = router("providers:\n" + provider_yaml("t", server, ["gpt-4o"]))
    before = value(scrape(r), "router_idempotent_replays_total")
    for _ in range(3):
        httpx.post(
            r.url + "/v1/chat/completions",
            headers={"X-Idempotency-Key": "once"},
            json={"model": "gpt-4o", "messages": HELLO},
        )
    assert value(scrape(r), "router_idempotent_replays_total") - before == 2


def test_each_endpoint_is_counted_apart_and_admin_usage_agrees(sim: Sim, router: Router) -> None:
    server = sim("real200")
    models = {
        "gpt-4o": "{price: {input: 1000, output: 2000}}",
        "text-embedding-3-small": "{kind: embedding, price: {input: 100, output: 0}}",
    }
    r = router(
        "admin: {key: admin-secret}\nclients:\n  - name: team\n    key: " + CLIENT_KEY + "\n"
        "providers:\n" + provider_yaml("real", server, models)
    )
    before = scrape(r)
    for _ in range(2):
        assert chat(r).status_code == 200
    for text in ("alpha", ["beta", "gamma"], "delta"):
        embedded = httpx.post(
            r.url + "/v1/embeddings",
            headers=AUTH,
            json={"model": "text-embedding-3-small", "input": text},
            timeout=10,
        )
        assert embedded.status_code == 200, embedded.text
    after = scrape(r)

    def delta(metric: str, /, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    served = {"client": "team", "provider": "real"}
    chat_labels = {**served, "model": "gpt-4o", "endpoint": "chat"}
    embed_labels = {**served, "model": "text-embedding-3-small", "endpoint": "embeddings"}
    assert delta("router_requests_total", **chat_labels, code="200") == 2
    assert delta("router_requests_total", **embed_labels, code="200") == 3
    embed = {k: v for k, v in embed_labels.items() if k != "client"}
    assert delta("router_request_duration_seconds_count", **embed) == 3
    tokens = {
        endpoint: delta("router_tokens_total", **labels, type="prompt")
        + delta("router_tokens_total", **labels, type="completion")
        for endpoint, labels in (("chat", chat_labels), ("embeddings", embed_labels))
    }
    assert tokens["embeddings"] > 0 and delta("router_tokens_total", **embed_labels, type="completion") == 0
    report = httpx.get(r.url + "/admin/usage", headers={"Authorization": "Bearer admin-secret"}).json()
    team = report["clients"]["team"]
    assert set(team["by_endpoint"]) == {"chat", "embeddings"}
    for endpoint, counted in tokens.items():
        assert team["by_endpoint"][endpoint]["total"]["tokens"] == counted
        assert team["by_endpoint"][endpoint]["day"]["tokens"] == counted
    assert sum(e["total"]["tokens"] for e in team["by_endpoint"].values()) == team["total"]["tokens"]
    cost = sum(e["total"]["cost"] for e in team["by_endpoint"].values())
    assert abs(cost - team["total"]["cost"]) < 1e-9
