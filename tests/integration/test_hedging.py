"""Hedged requests over real sockets: a provider slow to its first token raced by a fast one.

`a` (trinity's dialect) waits 1.5 s before its first token; `b` (real200's) answers at once.
Routing is ordered, so `a` is always asked first.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]


def routing(hedge: str) -> str:
    return f"{{strategy: ordered, timeouts: {{first_token: 5s, idle: 5s, total: 10s}}, hedge: {hedge}}}"


def serve(
    sim: Sim, router: Router, tmp_path: Path, hedge: str, *, slow: str = "1500ms"
) -> tuple[RouterThread, SimServer, SimServer]:
    a = sim("trinity", chunks=4, faults=f"slow_first_token={slow}")
    b = sim("real200", chunks=4)
    text = config_yaml(
        provider_yaml("a", a, ["gpt-4o"]), provider_yaml("b", b, ["gpt-4o"]), routing=routing(hedge)
    )
    return router(text + f"state: {{ledger_file: {tmp_path / 'ledger.jsonl'}}}\n"), a, b


def counter(r: RouterThread, name: str) -> float:
    text = httpx.get(r.url + "/metrics").text
    found = re.search(rf'^{name}{{model="gpt-4o"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def records(r: RouterThread) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(r.config))


@pytest.mark.parametrize("stream", [True, False])
def test_a_hedge_answers_near_after_and_the_slow_attempt_is_settled_as_a_hedge(
    sim: Sim, router: Router, tmp_path: Path, stream: bool
) -> None:
    r, a, b = serve(sim, router, tmp_path, "{after: 300ms, max: 1, budget: 100%}")
    started_before = counter(r, "router_hedges_started_total")
    won_before = counter(r, "router_hedges_won_total")
    began = time.monotonic()
    with httpx.stream(
        "POST", r.url + "/v1/chat/completions", headers=AUTH,
        json={"model": "gpt-4o", "messages": HELLO, "stream": stream}, timeout=10,
    ) as response:  # fmt: skip
        body = response.iter_raw()
        first = next(body)
        first_token = time.monotonic() - began
        assert response.status_code == 200 and first
        assert response.headers["x-router-provider"] == "b"
        assert response.headers["x-router-attempts"] == "2"
        for _ in body:
            pass
    assert 0.3 <= first_token < 1.2  # `after`, then b's fast answer; not a's 1.5 s
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    assert counter(r, "router_hedges_started_total") == started_before + 1
    assert counter(r, "router_hedges_won_total") == won_before + 1
    deadline = time.monotonic() + 3
    while len(records(r)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    main = next(x for x in records(r) if x["provider"] == "b")
    hedge = next(x for x in records(r) if x["provider"] == "a")
    assert main["outcome"] == "completed" and main["settlement_key"] == response.headers["x-settlement-key"]
    assert hedge["outcome"] == "hedge_lost" and hedge["hedge_of"] == main["settlement_key"]
    assert hedge["prompt_tokens"] > 0 and hedge["usage_source"] == "estimated"


def test_hedges_come_out_of_a_budget(sim: Sim, router: Router, tmp_path: Path) -> None:
    # A 0 % budget still allows one hedge per window (the floor), and no more.
    r, _, _ = serve(sim, router, tmp_path, "{after: 300ms, budget: 0%}", slow="800ms")
    providers = []
    for _ in range(2):
        response = httpx.post(
            r.url + "/v1/chat/completions",
            headers=AUTH,
            json={"model": "gpt-4o", "messages": HELLO},
            timeout=10,
        )
        assert response.status_code == 200
        providers.append(response.headers["x-router-provider"])
    assert providers == ["b", "a"]  # the second waited for a: the budget was spent


def test_a_model_may_turn_hedging_off(sim: Sim, router: Router, tmp_path: Path) -> None:
    r, _, b = serve(
        sim, router, tmp_path, "{after: 300ms, budget: 100%, models: {gpt-4o: off}}", slow="800ms"
    )
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}, timeout=10
    )
    assert response.status_code == 200 and response.headers["x-router-provider"] == "a"
    assert b.chat_requests == 0


def test_a_provider_that_does_not_stream_fails_over_not_wins_with_its_error(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    # A whole answer commits only once it is a valid answer: a fast 500 is a failed attempt.
    a = sim("trinity", faults="status=500")
    b = sim("real200")
    text = config_yaml(
        provider_yaml("a", a, ["gpt-4o"], streaming="false"),
        provider_yaml("b", b, ["gpt-4o"]),
        routing=routing("{after: 300ms, budget: 100%}"),
    )
    r = router(text)
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}, timeout=10
    )
    assert response.status_code == 200 and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)


def test_a_final_error_from_the_hedge_is_the_hedges_and_the_first_attempt_is_settled_as_a_hedge(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    a = sim("trinity", chunks=4, faults="slow_first_token=1500ms")
    b = sim("real200", faults="status=400")  # the client's own fault: no other attempt helps
    text = config_yaml(
        provider_yaml("a", a, ["gpt-4o"]),
        provider_yaml("b", b, ["gpt-4o"]),
        routing=routing("{after: 300ms, budget: 100%}"),
    )
    r = router(text + f"state: {{ledger_file: {tmp_path / 'ledger.jsonl'}}}\n")
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}, timeout=10
    )
    assert response.status_code == 400 and response.headers["x-router-provider"] == "b"
    deadline = time.monotonic() + 3
    while len(records(r)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    by_provider = {x["provider"]: x for x in records(r)}
    assert by_provider["b"]["status"] == 400 and by_provider["b"]["outcome"] == "error"
    assert by_provider["a"]["outcome"] == "hedge_lost"
