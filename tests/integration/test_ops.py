"""Operators' view: /admin behind admin.key, drains, readiness, active probes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
ADMIN = {"Authorization": "Bearer admin-secret"}
HELLO = [{"role": "user", "content": "Hello"}]


def with_admin(text: str) -> str:
    return text.replace("providers:", "admin: {key: admin-secret}\nproviders:", 1)


def chat(r: RouterThread, **body: Any) -> httpx.Response:
    return httpx.post(
        r.url + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        json={"model": "gpt-4o", "messages": HELLO, **body},
        timeout=10,
    )


def test_admin_needs_its_key_and_is_off_without_one(sim: Sim, router: Router) -> None:
    server = sim("real200")
    closed = router(config_yaml(provider_yaml("b", server, ["gpt-4o"])))
    off = httpx.get(closed.url + "/admin/providers", headers=ADMIN)
    assert off.status_code == 403 and off.json()["error"]["code"] == "admin_disabled"
    r = router(with_admin(config_yaml(provider_yaml("b", server, ["gpt-4o"]))))
    assert httpx.get(r.url + "/admin/providers").status_code == 401
    client_key = {"Authorization": f"Bearer {CLIENT_KEY}"}
    assert httpx.get(r.url + "/admin/providers", headers=client_key).status_code == 401
    assert httpx.post(r.url + "/admin/providers/nope/drain", headers=ADMIN).status_code == 404


def test_the_providers_report_shows_each_keys_state(sim: Sim, router: Router) -> None:
    a, b = sim("trinity", faults="status=500"), sim("real200")
    r = router(
        with_admin(
            config_yaml(
                provider_yaml("a", a, ["gpt-4o"]),
                provider_yaml("b", b, ["gpt-4o"]),
                routing="{strategy: ordered}",
            )
        )
    )
    for _ in range(3):
        assert chat(r).status_code == 200  # a fails, b answers
    report = httpx.get(r.url + "/admin/providers", headers=ADMIN).json()["providers"]
    by_name = {p["name"]: p for p in report}
    key_a = by_name["a"]["keys"][0]
    assert key_a["key"] == "a-0" and key_a["status"] == "open" and key_a["consecutive_failures"] == 3
    assert 25 <= key_a["retry_in_seconds"] <= 33  # 30 s +-10 %, less the time since it opened
    assert by_name["b"]["keys"][0]["status"] == "closed" and by_name["b"]["keys"][0]["answer_ms"] > 0
    assert "a-secret-key" not in str(report)  # names, never keys


def test_drain_readiness_and_undrain_forgiving_a_refused_key(sim: Sim, router: Router) -> None:
    a = sim("trinity", keys=("a-secret-key",))
    r = router(with_admin(config_yaml(provider_yaml("a", a, ["gpt-4o"]))))
    assert httpx.get(r.url + "/readyz").status_code == 200
    httpx.post(r.url + "/admin/providers/a/drain", headers=ADMIN)
    unready = httpx.get(r.url + "/readyz")
    assert unready.status_code == 503 and "drained" in unready.json()["reason"]
    drained = chat(r)
    assert drained.status_code == 503 and drained.json()["error"]["code"] == "no_provider_available"
    assert a.chat_requests == 0
    httpx.post(r.url + "/admin/providers/a/undrain", headers=ADMIN)
    assert chat(r).status_code == 200
    refused = chat(r, sim_fault="status=401")  # our key refused: an ops problem
    assert refused.status_code == 502
    assert httpx.get(r.url + "/readyz").status_code == 503
    assert chat(r).status_code == 503  # the key stays off: not tried again
    httpx.post(r.url + "/admin/providers/a/undrain", headers=ADMIN)  # after replacing the key
    assert chat(r).status_code == 200


def test_probes_check_idle_keys_and_move_their_breakers(sim: Sim, router: Router) -> None:
    a = sim("trinity", faults="status=500")
    r = router(
        with_admin(
            config_yaml(
                provider_yaml("a", a, ["gpt-4o", "gpt-5.1"], probe="{interval: 200ms, model: gpt-5.1}"),
                routing="{breaker: {failures: 2, cooldown: 300ms, max_cooldown: 300ms}}",
            )
        )
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and a.chat_requests < 2:
        time.sleep(0.05)
    probes = list(a.requests)
    assert len(probes) >= 2
    assert all(p.body["model"] == "gpt-5.1" and p.body["max_tokens"] == 1 for p in probes)
    assert all(p.headers["x-request-id"].startswith("probe_") for p in probes)
    status = httpx.get(r.url + "/admin/providers", headers=ADMIN).json()["providers"][0]["keys"][0]["status"]
    assert status in ("open", "half_open")  # two failed probes opened the breaker
    a.set_faults("")
    while time.monotonic() < deadline:
        report = httpx.get(r.url + "/admin/providers", headers=ADMIN).json()["providers"][0]["keys"][0]
        if report["status"] == "closed":
            break
        time.sleep(0.05)
    assert report["status"] == "closed"  # a probe succeeded: closed without a client's request
