"""Limits, budgets, settlement and idempotency through a running router, on every backend.

Each test runs with state in memory, in a real redis-server and in a real Redis Cluster.
After each, the usage counters of every client equal the sum of its ledger records.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import config as configuration
from router import ledger, limits
from router.sim import SimServer
from router.state.redis import RedisStore
from tests.conftest import CLIENT_KEY, RouterThread, provider_yaml
from tests.redis_relay import RoundTripRelay, relay_to
from tests.redis_rig import RedisCluster, RedisServer

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
ADMIN = {"Authorization": "Bearer admin-secret"}
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
OTHER_KEY = "sk-test-other-client-key"
HELLO = [{"role": "user", "content": "Hello"}]


@dataclass
class Backend:
    name: str
    url: str
    ledger_file: Path | None = None

    def state_yaml(self) -> str:
        extra = f", ledger_file: {self.ledger_file}" if self.ledger_file else ""
        return f'state: {{url: "{self.url}"{extra}}}\n'


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return Backend("memory", "memory://", tmp_path / "ledger.jsonl")
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("fresh_redis")
        return Backend("redis", server.url)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return Backend("cluster", cluster.url)


def config(backend: Backend, *providers: str, client: str = "", anonymous: bool = False) -> str:
    text = backend.state_yaml() + "admin: {key: admin-secret}\n"
    if not anonymous:
        text += f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
        text += "".join(f"    {line}\n" for line in client.splitlines() if line.strip())
    return text + "providers:\n" + "".join(providers)


def records(r: RouterThread) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(r.config))


async def records_in(server: RedisServer, client: str) -> list[bytes]:
    store = RedisStore(server.url)
    try:
        return await store.records(limits.client_scope(client))
    finally:
        await store.aclose()


def wait_for_record(r: RouterThread, settlement_key: str, *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while settlement_key not in {x["settlement_key"] for x in records(r)}:
        assert time.monotonic() < deadline, f"no record {settlement_key} after {within} s"
        time.sleep(0.05)


def usage(r: RouterThread) -> dict[str, Any]:
    response = httpx.get(r.url + "/admin/usage", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def assert_counters_match_ledger(r: RouterThread) -> list[dict[str, Any]]:
    """The invariant of SPEC §6: every client's usage counters equal the sum of its records."""
    found = records(r)
    report = usage(r)["clients"]
    for name, row in report.items():
        mine = [x for x in found if (x["client"] or "_") == name]
        assert row["total"]["tokens"] == sum(x["prompt_tokens"] + x["completion_tokens"] for x in mine)
        assert row["total"]["cost"] == pytest.approx(sum(x["cost"] for x in mine), abs=1e-9)
    return found


@pytest.fixture
def settled() -> Iterator[list[RouterThread]]:
    """Routers registered here get the counters-equal-ledger check after the test."""
    routers: list[RouterThread] = []
    yield routers
    for r in routers:
        assert_counters_match_ledger(r)


def chat(r: RouterThread, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    return httpx.post(
        r.url + "/v1/chat/completions",
        headers={**AUTH, **(headers or {})},
        json={"model": "gpt-4o", "messages": HELLO, **body},
        timeout=15,
    )


def test_every_finished_request_writes_one_record(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    price = "{price: {input: 2.5, output: 10}}"
    r = router(config(backend, provider_yaml("trinity", server, {"gpt-4o": price})))
    settled.append(r)
    plain = chat(r)
    streamed = chat(r, stream=True)
    assert plain.status_code == streamed.status_code == 200
    keys = [plain.headers["x-settlement-key"], streamed.headers["x-settlement-key"]]
    found = records(r)
    assert [x["settlement_key"] for x in found] == keys
    first = found[0]
    assert first["client"] == "team" and first["provider"] == "trinity" and first["key"] == "trinity-0"
    assert first["model"] == "gpt-4o" and first["usage_source"] == "provider" and first["status"] == 200
    reported = plain.json()["usage"]
    assert (first["prompt_tokens"], first["completion_tokens"]) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    expected = (reported["prompt_tokens"] * 2.5 + reported["completion_tokens"] * 10) / 1e6
    assert first["cost"] == pytest.approx(expected)
    assert found[1]["usage_source"] == "provider"  # router asked trinity for stream usage
    assert first["request_id"] == plain.headers["x-request-id"]


def test_a_stream_without_provider_usage_is_settled_with_an_estimate(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("real200")  # documents no usage in streams
    r = router(config(backend, provider_yaml("real200", server, ["gpt-4o"], stream_usage="false")))
    settled.append(r)
    assert chat(r, stream=True).status_code == 200
    (record,) = records(r)
    assert record["usage_source"] == "estimated"
    assert record["completion_tokens"] > 0 and record["prompt_tokens"] > 0
    # A client that asks for usage is told the same estimate that is settled.
    asked = chat(r, stream=True, stream_options={"include_usage": True})
    usage = orjson.loads(asked.text.split("\n\n")[-3].removeprefix("data: "))["usage"]
    record = records(r)[-1]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        record["prompt_tokens"],
        record["completion_tokens"],
    )
    assert record["usage_source"] == "estimated"


def test_failures_before_upstream_work_store_nothing(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client="limits: {rpm: 1}"))
    settled.append(r)
    assert chat(r).status_code == 200
    refused = chat(r, headers={"X-Idempotency-Key": "k1"})
    assert refused.status_code == 429
    assert "x-settlement-key" not in refused.headers
    assert len(records(r)) == 1


def test_a_refused_client_takes_nothing_from_the_key_asked_alongside(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    """The client's scope and the provider key's are asked in one round trip: when the client is
    refused, what the key granted with it (its RPM slot too) is given back."""
    server = sim("trinity")
    text = config(
        backend,
        provider_yaml("trinity", server, ["gpt-4o"], limits="{rpm: 2}"),
        client="limits: {rpm: 1}",
    )
    r = router(text.replace("providers:\n", f"  - name: other\n    key: {OTHER_KEY}\nproviders:\n", 1))
    settled.append(r)
    assert chat(r).status_code == 200
    for _ in range(3):
        refused = chat(r)
        assert refused.status_code == 429 and refused.headers["x-ratelimit-limit-requests"] == "1"
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    assert chat(r, headers=other).status_code == 200  # the key's second request was still there
    assert chat(r, headers=other).status_code == 429  # and now the key is at its limit
    assert server.chat_requests == 2


def test_a_repeat_is_replayed_even_when_no_provider_could_take_it(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"], limits="{rpm: 1}")))
    settled.append(r)
    key = {"X-Idempotency-Key": "order-7"}
    first = chat(r, headers=key)
    assert first.status_code == 200
    assert chat(r).status_code == 429  # the key is at its limit, and router remembers it
    # No attempt is made, so no key is asked: the client's scope is still asked, and answers.
    again = chat(r, headers=key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["x-settlement-key"] == first.headers["x-settlement-key"]
    assert chat(r, headers=key, max_tokens=3).status_code == 422
    assert server.chat_requests == 1


def test_a_client_over_its_rpm_gets_429_with_openai_headers(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client="limits: {rpm: 3}"))
    settled.append(r)
    answers = [chat(r) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["x-ratelimit-limit-requests"] == "3"
    assert answers[0].headers["x-ratelimit-remaining-requests"] == "2"
    assert answers[2].headers["x-ratelimit-remaining-requests"] == "0"
    refused = answers[3]
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 20
    assert refused.headers["x-ratelimit-reset-requests"].endswith("s")
    assert server.chat_requests == 3


def test_a_client_over_its_token_budget_gets_402(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(
        config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client="budget: {tokens: 60, per: day}")
    )
    settled.append(r)
    statuses = [chat(r, max_tokens=5).status_code for _ in range(8)]  # each uses ~10 tokens
    assert statuses[0] == 200 and statuses[-1] == 402
    spent = chat(r, max_tokens=5).json()["error"]
    assert spent["code"] == "insufficient_quota" and spent["type"] == "insufficient_quota"
    row = usage(r)["clients"]["team"]
    assert row["limit"]["per"] == "day"
    # Strict: refused once a request needs more (~27 prompt + 5 completion) than is left, so
    # the budget is not overdrawn, and the client is told what is left.
    assert row["day"]["tokens"] <= 60
    left = row["limit"]["remaining"]
    assert (
        0 < left < 32
        and f"more than the {left} tokens left of the budget of 'team' today" in spent["message"]
    )


def test_a_cost_budget_uses_the_price(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    price = "{price: {input: 1000, output: 1000}}"  # 0.001 per token
    r = router(
        config(
            backend,
            provider_yaml("trinity", server, {"gpt-4o": price}),
            client="budget: {cost: 0.05, per: month}",
        )
    )
    settled.append(r)
    statuses = [chat(r, max_tokens=5).status_code for _ in range(7)]  # each costs ~0.01
    assert statuses[:2] == [200, 200] and statuses[-1] == 402
    assert usage(r)["clients"]["team"]["month"]["cost"] <= 0.05 + 0.04


def test_a_provider_key_at_its_limit_is_skipped_then_429_with_the_soonest_retry(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    a, b = sim("trinity"), sim("real200")
    r = router(
        config(
            backend,
            provider_yaml("a", a, ["gpt-4o"], priority="1", limits="{rpm: 1}"),
            provider_yaml("b", b, ["gpt-4o"], priority="2", limits="{rpm: 2}"),
        )
    )
    settled.append(r)
    answers = [chat(r) for _ in range(4)]
    assert [x.headers.get("x-router-provider") for x in answers[:3]] == ["a", "b", "b"]
    last = answers[3]
    assert last.status_code == 429 and last.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(last.headers["retry-after"]) <= 30  # b refills one request every 30 s
    assert (a.chat_requests, b.chat_requests) == (1, 2)


def test_a_provider_key_out_of_quota_is_skipped_until_the_period_rolls(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    a, b = sim("trinity"), sim("real200")
    r = router(
        config(
            backend,
            provider_yaml("a", a, ["gpt-4o"], priority="1", quota="{tokens: 10, per: month}"),
            provider_yaml("b", b, ["gpt-4o"], priority="2"),
        )
    )
    settled.append(r)
    providers = [chat(r, max_tokens=5).headers.get("x-router-provider") for _ in range(3)]
    assert providers == ["a", "b", "b"]
    report = usage(r)["providers"]
    assert report["a"]["a-0"]["limit"]["remaining"] == 0
    assert report["b"]["b-0"]["month"]["tokens"] > 0


def test_idempotent_repeat_is_replayed_byte_for_byte(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    forward = "[X-Idempotency-Key]"
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"], forward_headers=forward)))
    settled.append(r)
    key = {"X-Idempotency-Key": "order-42"}
    first = chat(r, headers=key)
    again = chat(r, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert again.headers["x-settlement-key"] == first.headers["x-settlement-key"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert server.chat_requests == 1
    assert len(records(r)) == 1
    other = chat(r, headers=key, temperature=0.5)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    # Idempotency-Key (no X-) is the same header.
    assert chat(r, headers={"Idempotency-Key": "order-42"}).content == first.content
    # Trinity documents the header: it is forwarded, so the provider charges once too.
    assert server.requests[0].headers.get("x-idempotency-key") == "order-42"


def test_an_idempotent_stream_is_replayed_as_the_same_stream(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    settled.append(r)
    key = {"X-Idempotency-Key": "stream-1"}
    first = chat(r, headers=key, stream=True)
    again = chat(r, headers=key, stream=True)
    assert again.headers["content-type"].startswith("text/event-stream")
    assert again.content == first.content and again.content.endswith(b"data: [DONE]\n\n")
    assert again.headers["idempotent-replayed"] == "true"
    assert server.chat_requests == 1 and len(records(r)) == 1


def test_a_repeat_while_the_first_runs_gets_409(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", latency=1.5)  # long enough that the repeats surely overlap it
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    settled.append(r)
    key = {"X-Idempotency-Key": "slow"}
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(chat(r, headers=key)))
    first.start()
    time.sleep(0.2)
    conflict = chat(r, headers=key)
    different = chat(r, headers=key, temperature=1)
    first.join()
    assert conflict.status_code == 409
    # The claim's remaining life (state.lease_ttl, 30 s, less the 0.2 s it has run).
    assert 28 <= int(conflict.headers["retry-after"]) <= 30, conflict.headers["retry-after"]
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert different.status_code == 422  # SPEC §8: a different body is 422 even while running
    assert results[0].status_code == 200 and server.chat_requests == 1


def test_a_client_fault_answer_is_stored_but_a_retryable_failure_is_not(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", faults="status=400,code=context_length_exceeded")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    settled.append(r)
    bad = chat(r, headers={"X-Idempotency-Key": "too-long"})
    assert bad.status_code == 400
    again = chat(r, headers={"X-Idempotency-Key": "too-long"})
    assert again.content == bad.content and again.headers["idempotent-replayed"] == "true"
    assert server.chat_requests == 1
    server.set_faults("status=503")
    failed = chat(r, headers={"X-Idempotency-Key": "flaky"})
    assert failed.status_code == 502
    server.set_faults("")
    retried = chat(r, headers={"X-Idempotency-Key": "flaky"})
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    statuses = [x["status"] for x in records(r)]
    assert statuses == [400, 502, 200]


def test_idempotency_keys_are_scoped_to_the_client(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    text = config(backend, provider_yaml("trinity", server, ["gpt-4o"]))
    text = text.replace("providers:", "  - name: other\n    key: sk-other-client\nproviders:", 1)
    r = router(text)
    settled.append(r)
    key = {"X-Idempotency-Key": "shared-name"}
    mine = chat(r, headers=key)
    theirs = chat(r, headers={**key, "Authorization": "Bearer sk-other-client"})
    assert mine.status_code == theirs.status_code == 200
    assert mine.headers["x-settlement-key"] != theirs.headers["x-settlement-key"]
    assert server.chat_requests == 2


def test_a_bad_idempotency_key_is_refused(backend: Backend, sim: Sim, router: Router) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    answer = chat(r, headers={"X-Idempotency-Key": "x" * 256})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "x-idempotency-key"


def test_with_no_clients_everyone_shares_one_scope(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity")
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"]), anonymous=True))
    settled.append(r)
    first = chat(r, headers={"X-Idempotency-Key": "anon"})
    assert chat(r, headers={"X-Idempotency-Key": "anon"}).content == first.content
    (record,) = records(r)
    assert record["client"] is None


def test_a_client_that_leaves_mid_stream_is_still_settled_and_its_slot_freed(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", chunks=40, chunk_gap=0.05)
    r = router(
        config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client="limits: {concurrency: 1}")
    )
    settled.append(r)
    with httpx.stream(
        "POST",
        r.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
    ) as response:
        next(response.iter_bytes())
    left = time.monotonic()
    while chat(r).status_code == 429:  # the slot comes back once the router notices
        assert time.monotonic() - left < 1.5
        time.sleep(0.05)
    found = records(r)
    assert [x["outcome"] for x in found] == ["client_disconnected", "completed"]
    assert found[0]["usage_source"] == "estimated"


def test_with_an_idempotency_key_a_stream_is_finished_after_the_client_leaves(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", chunks=20, chunk_gap=0.02)
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    settled.append(r)
    key = {**AUTH, "X-Idempotency-Key": "leave-early"}
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    with httpx.stream("POST", r.url + "/v1/chat/completions", headers=key, json=body) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 5
    while True:
        again = httpx.post(r.url + "/v1/chat/completions", headers=key, json=body)
        if again.status_code == 200:
            break
        assert again.status_code == 409 and time.monotonic() < deadline
        time.sleep(0.1)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content.endswith(b"data: [DONE]\n\n") and again.content.count(b"data: ") >= 20
    (record,) = records(r)
    assert record["outcome"] == "completed" and record["usage_source"] == "provider"
    assert server.chat_requests == 1


def test_router_ledger_prints_records_as_json_lines(
    backend: Backend, sim: Sim, router: Router, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from router.cli import main

    server = sim("trinity")
    text = config(backend, provider_yaml("trinity", server, ["gpt-4o"]))
    r = router(text)
    keys = [chat(r).headers["x-settlement-key"] for _ in range(2)]
    path = tmp_path / "providers.yaml"
    path.write_text(text)
    assert main(["ledger", "--config", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [orjson.loads(line)["settlement_key"] for line in lines] == keys
    assert main(["ledger", "--config", str(path), "--client", "nobody"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["ledger", "--config", str(path), "--since", "1h"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["ledger", "--config", str(path), "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["ledger", "--config", str(path), "--since", "soon"]) == 2


def test_config_parses_the_state_section() -> None:
    parsed = configuration.parse(
        "state: {url: 'redis+cluster://127.0.0.1:7000', timeout: 100ms, retention: 2h, replicas: 3}\n"
        "providers: {p: {base_url: 'http://127.0.0.1:1', keys: [k], models: {m: {}}}}\n",
        env={},
    )
    assert (parsed.state.timeout, parsed.state.retention, parsed.state.replicas) == (0.1, 7200.0, 3)


def quiet(relay: RoundTripRelay, *, period: float = 0.25) -> None:
    """Wait until router has sent nothing to Redis for `period` (a stream settles after its end)."""
    seen, since = len(relay.round_trips), time.monotonic()
    while time.monotonic() - since < period:
        time.sleep(0.02)
        if len(relay.round_trips) != seen:
            seen, since = len(relay.round_trips), time.monotonic()


def test_round_trips_to_redis_per_request(fresh_redis: RedisServer, sim: Sim, router: Router) -> None:
    """DESIGN-NOTES: at most one round trip to Redis before the upstream call and one after, none
    per chunk. Counted on the wire by a relay (commandstats cannot tell a pipeline of two scripts
    from two scripts one after the other); each round trip is labelled with how many upstream
    calls the simulator had seen when it started, which says whether it came before or after."""
    server = sim("trinity", chunks=200)
    with relay_to(fresh_redis.port, label=lambda: server.chat_requests) as relay:
        backend = Backend("redis", relay.url)
        limited = router(
            config(
                backend,
                provider_yaml("trinity", server, ["gpt-4o"], limits="{rpm: 1000}"),
                client="limits: {rpm: 1000}",
            )
        )
        plain = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
        shapes: dict[str, tuple[RouterThread, Callable[[int], dict[str, Any]]]] = {
            "client and key limits": (limited, lambda n: {}),
            "with an idempotency key": (limited, lambda n: {"headers": {"X-Idempotency-Key": f"rt-{n}"}}),
            "a stream of 200 chunks": (limited, lambda n: {"stream": True}),
            "no limits": (plain, lambda n: {}),
        }
        for r in (limited, plain):
            assert chat(r).status_code == 200  # connects and loads the scripts
        quiet(relay)
        costs: dict[str, list[tuple[int, int]]] = {}
        for name, (r, options) in shapes.items():
            costs[name] = []
            for n in range(5):
                start, upstream = len(relay.round_trips), server.chat_requests
                assert chat(r, **options(n)).status_code == 200
                quiet(relay)
                labels = relay.round_trips[start:]
                before, after = labels.count(upstream), labels.count(upstream + 1)
                assert before + after == len(labels), (name, labels)  # each one is before or after
                costs[name].append((before, after))
    print(f"\nRedis round trips per request (before, after the upstream call): {costs}")
    limited_shapes = ("client and key limits", "with an idempotency key", "a stream of 200 chunks")
    for name in limited_shapes:
        assert all(before == 1 and after == 1 for before, after in costs[name]), (name, costs[name])
    # With nothing to check, the one write before is the request's intent (recovery.py), whose
    # reply nothing waits for: it leaves before the upstream call does, but this relay (a thread
    # of its own) may pass it on after the simulator has counted the call, so only the total and
    # the settlement's one round trip after are certain here.
    unlimited = costs["no limits"]
    assert all(before + after == 2 and before <= 1 for before, after in unlimited), unlimited


def test_an_answer_without_an_idempotency_key_does_not_wait_for_its_settlement(
    fresh_redis: RedisServer, sim: Sim, router: Router
) -> None:
    """ticket.answered: the settlement is written before the answer leaves, its reply is read
    after. With a key the answer is stored first, so that answer waits for Redis."""
    server = sim("trinity")
    with relay_to(fresh_redis.port) as relay:
        text = config(Backend("redis", relay.url), provider_yaml("trinity", server, ["gpt-4o"]))
        r = router(text.replace('state: {url: "', 'state: {timeout: 10s, url: "', 1))
        assert chat(r).status_code == 200  # connects and loads the scripts
        quiet(relay)
        relay.reply_delay = HELD = 1.5
        began = time.monotonic()
        plain = chat(r)
        plain_took = time.monotonic() - began
        # Its settlement is in Redis (read past the relay) while its reply is still held.
        while plain.headers["x-settlement-key"] not in {
            orjson.loads(x)["settlement_key"] for x in asyncio.run(records_in(fresh_redis, "team"))
        }:
            assert time.monotonic() - began < HELD, "the settlement was not written before its reply came"
            time.sleep(0.02)
        began = time.monotonic()
        keyed = chat(r, headers={"X-Idempotency-Key": "waits"})
        keyed_took = time.monotonic() - began
        relay.reply_delay = 0.0
        assert plain.status_code == 200 and keyed.status_code == 200
        assert plain_took < HELD / 2, plain_took  # no round trip before (no limits), none waited for after
        assert keyed_took >= 2 * HELD, keyed_took  # the claim before, the stored answer after
        settled = {x["settlement_key"] for x in records(r)}  # through the relay: router's Redis
        assert {plain.headers["x-settlement-key"], keyed.headers["x-settlement-key"]} <= settled


def test_on_failure_closed_refuses_while_redis_is_down(
    fresh_redis: RedisServer, sim: Sim, router: Router
) -> None:
    server = sim("trinity")
    text = config(Backend("redis", fresh_redis.url), provider_yaml("trinity", server, ["gpt-4o"]))
    r = router(text.replace('state: {url: "', 'state: {on_failure: closed, url: "', 1))
    first = chat(r)
    assert first.status_code == 200
    # Its settlement's reply may still be on its way when the answer is (ticket.answered):
    # Redis stopping before replying would rightly count as Redis down, so wait for it first.
    wait_for_record(r, first.headers["x-settlement-key"])
    fresh_redis.stop()
    # A request with nothing to check learns that Redis is down when it settles: it is served,
    # and its record waits in the outbox. From then on every request is refused.
    served = chat(r)
    assert served.status_code == 200
    began = time.monotonic()
    refused = chat(r)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "state_unavailable"
    assert refused.headers["retry-after"] and time.monotonic() - began < 2
    assert httpx.get(r.url + "/readyz").status_code == 503
    metrics = httpx.get(r.url + "/metrics").text
    assert 'router_state_errors_total{op="acquire"}' in metrics
    fresh_redis.restart()
    deadline = time.monotonic() + 15
    while chat(r).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # The one served while Redis was down is written from the outbox (this Redis keeps nothing
    # across a restart, so the record from before is gone: that is the test rig, not router).
    wait_for_record(r, served.headers["x-settlement-key"], within=deadline - time.monotonic())


def test_a_provider_429_is_never_stored_for_replay(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", faults="status=429,retry_after=3600,times=1")  # too long to wait for
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"])))
    settled.append(r)
    key = {"X-Idempotency-Key": "busy"}
    assert chat(r, headers=key).status_code == 429
    again = chat(r, headers=key)  # runs fresh: the key is cooling, so it is 429 again, but not a replay
    assert again.status_code == 429 and "idempotent-replayed" not in again.headers


def test_a_key_at_its_concurrency_limit_is_skipped_only_while_it_is_full(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    a, b = sim("trinity", chunks=30, chunk_gap=0.02), sim("real200")
    r = router(
        config(
            backend,
            provider_yaml("a", a, ["gpt-4o"], priority="1", limits="{concurrency: 1}"),
            provider_yaml("b", b, ["gpt-4o"], priority="2"),
        )
    )
    settled.append(r)
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    with httpx.stream("POST", r.url + "/v1/chat/completions", headers=AUTH, json=body) as streaming:
        assert streaming.headers["x-router-provider"] == "a"
        assert chat(r).headers["x-router-provider"] == "b"  # a is full
        streaming.read()
    assert chat(r).headers["x-router-provider"] == "a"  # free again at once, not a second later


def test_while_the_budget_is_reserved_by_requests_in_flight_the_answer_is_429_not_402(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("trinity", latency=1.5)
    r = router(
        config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client="budget: {tokens: 50, per: day}")
    )
    settled.append(r)
    # Each reserves ~32 (27 prompt + 5): the second fits what is left, but not beside the first.
    results: list[httpx.Response] = []
    first = threading.Thread(target=lambda: results.append(chat(r, max_tokens=5)))
    first.start()
    time.sleep(0.2)
    held = chat(r, max_tokens=5)
    first.join()
    assert results[0].status_code == 200
    assert held.status_code == 429 and "reserved" in held.json()["error"]["message"]
    assert chat(r, max_tokens=5).status_code == 200  # the first used ~10 of 50: room again
