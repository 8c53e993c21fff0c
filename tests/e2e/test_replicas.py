"""Two `router serve` processes sharing one real Redis (and one real Redis Cluster): the
shared org endpoint. Limits, idempotency, concurrency and budgets hold across replicas;
Redis dying mid-traffic hangs nothing and loses no settlement.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import config as configuration
from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY
from tests.e2e.conftest import Served, serve, stop
from tests.redis_rig import RedisCluster, RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"Authorization": "Bearer admin-secret"}
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]
"""A killed Redis keeps every write it acknowledged: the test is about the router, not Redis."""
Sim = Callable[..., SimServer]


@dataclass
class Replicas:
    routers: list[Served]
    config_path: Path

    def url(self, i: int) -> str:
        return self.routers[i % len(self.routers)].url

    def records(self) -> list[dict[str, Any]]:
        return asyncio.run(ledger.read(configuration.load(str(self.config_path), demo=True)))

    def counters_match_ledger(self) -> list[dict[str, Any]]:
        found = self.records()
        report = httpx.get(self.url(0) + "/admin/usage", headers=ADMIN).json()["clients"]["team"]
        assert report["total"]["tokens"] == sum(r["prompt_tokens"] + r["completion_tokens"] for r in found)
        return found


@pytest.fixture(params=["redis", "cluster"])
def state_url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("fresh_redis").url)
    cluster: RedisCluster = request.getfixturevalue("redis_cluster")
    cluster.flush()
    return cluster.url


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Callable[..., Replicas]]:
    started: list[Served] = []

    def start(
        state_url: str, sim: SimServer, *, client: str = "", count: int = 2, state: str = ""
    ) -> Replicas:
        text = (
            f'state: {{url: "{state_url}", replicas: {count}{", " + state if state else ""}}}\n'
            "admin: {key: admin-secret}\n"
            f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
            + "".join(f"    {line}\n" for line in client.splitlines() if line.strip())
            + "providers:\n"
            f"  trinity:\n    base_url: {sim.base_url}\n    keys: [sim-key]\n"
            "    forward_headers: [X-Idempotency-Key]\n    models: {gpt-4o: {}}\n"
        )
        path = tmp_path / "providers.yaml"
        path.write_text(text)
        for _ in range(count):
            started.append(serve("--config", str(path)))
        return Replicas(started[-count:], path)

    yield start
    for served in started:
        stop(served.process)


async def fire(replicas: Replicas, n: int, *, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    """n requests at once, alternating between the replicas."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    replicas.url(i) + "/v1/chat/completions", headers={**AUTH, **(headers or {})}, json=BODY
                )
                for i in range(n)
            )
        )


def test_a_client_rpm_limit_holds_across_replicas(
    state_url: str, sim: Sim, replicas: Callable[..., Replicas]
) -> None:
    server = sim("trinity")
    # A Redis slow to answer on a loaded machine is not what this is about: past state.timeout
    # each replica would fall back to its local share of the limit.
    r = replicas(state_url, server, client="limits: {rpm: 60}", state="timeout: 2s")
    refused_at: list[float] = []

    async def burst() -> list[httpx.Response]:
        async def one(client: httpx.AsyncClient, i: int) -> httpx.Response:
            answer = await client.post(r.url(i) + "/v1/chat/completions", headers=AUTH, json=BODY)
            if answer.status_code == 429:
                refused_at.append(time.monotonic())
            return answer

        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, i) for i in range(200)))

    answers = asyncio.run(burst())
    admitted = sum(a.status_code == 200 for a in answers)
    assert {a.status_code for a in answers} == {200, 429}
    # Every decision was made by the time its answer came: a refusal when its 429 arrived, an
    # admission when the request reached the simulator. GCRA refills one request a second
    # after the burst of 60, so the count is exact when they all fell within a second.
    admitted_at = [request.at for request in server.requests]
    first = min(admitted_at)
    window = max(max(refused_at), max(admitted_at)) - first
    print(f"\nrpm 60: {admitted} of 200 admitted; decisions within {window:.2f} s")
    assert 60 <= admitted <= 60 + int(window)
    if window < 1:
        assert admitted == 60
    assert len(r.counters_match_ledger()) == admitted


def test_one_idempotency_key_fired_50_times_at_both_replicas_calls_upstream_once(
    state_url: str, sim: Sim, replicas: Callable[..., Replicas]
) -> None:
    server = sim("trinity", latency=0.3)
    r = replicas(state_url, server)
    answers = asyncio.run(fire(r, 50, headers={"X-Idempotency-Key": "charge-once"}))
    assert server.chat_requests == 1
    ok = [a for a in answers if a.status_code == 200]
    assert {a.status_code for a in answers} <= {200, 409} and ok
    original = [a for a in ok if "idempotent-replayed" not in a.headers]
    assert len(original) <= 1
    bodies = {a.content for a in ok}
    assert len(bodies) == 1  # every replay is byte-identical
    assert {a.headers["x-settlement-key"] for a in ok} == {ok[0].headers["x-settlement-key"]}
    # After it finished, every repeat is a replay, from either replica.
    later = asyncio.run(fire(r, 4, headers={"X-Idempotency-Key": "charge-once"}))
    assert all(a.status_code == 200 and a.content in bodies for a in later)
    assert server.chat_requests == 1
    assert len(r.counters_match_ledger()) == 1


def test_a_concurrency_limit_holds_across_replicas_and_slots_come_back(
    state_url: str, sim: Sim, replicas: Callable[..., Replicas]
) -> None:
    server = sim("trinity", chunks=100, chunk_gap=0.05)  # streams of ~5 s
    r = replicas(state_url, server, client="limits: {concurrency: 5}")

    async def scenario() -> tuple[list[int], float]:
        stream = {**BODY, "stream": True, "max_tokens": 1000}
        async with httpx.AsyncClient(timeout=30) as client:
            opened = []
            statuses = []
            for i in range(10):
                request = client.build_request(
                    "POST", r.url(i) + "/v1/chat/completions", headers=AUTH, json=stream
                )
                response = await client.send(request, stream=True)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    chunks = response.aiter_bytes()  # kept: a dropped iterator closes the stream
                    await anext(chunks)
                    opened.append((response, chunks))
                else:
                    await response.aclose()
            for response, chunks in opened:  # the clients leave mid-stream
                await chunks.aclose()
                await response.aclose()
            left = time.monotonic()
            while True:  # the slots come back as soon as each replica notices
                answers = await asyncio.gather(
                    *(
                        client.post(r.url(i) + "/v1/chat/completions", headers=AUTH, json=BODY)
                        for i in range(5)
                    )
                )
                if all(a.status_code == 200 for a in answers):
                    return statuses, time.monotonic() - left
                assert time.monotonic() - left < 3
                await asyncio.sleep(0.05)

    statuses, back_after = asyncio.run(scenario())
    assert statuses.count(200) == 5 and statuses.count(429) == 5
    assert back_after < 1.0
    found = r.counters_match_ledger()
    assert sorted(x["outcome"] for x in found).count("client_disconnected") == 5


def test_a_budget_is_never_overdrawn_across_replicas(
    state_url: str, sim: Sim, replicas: Callable[..., Replicas]
) -> None:
    r = replicas(state_url, sim("trinity", latency=0.05), client="budget: {tokens: 200, per: month}")
    # Waves of 30 at once until the budget is spent: reservations in flight count, so a wave
    # admits only what the budget could still cover; the rest get 429 (retry when they finish).
    # Budgets are strict: a request whose reservation exceeds what is left is refused (402).
    seen: set[int] = set()
    for _ in range(60):
        answers = asyncio.run(fire(r, 30))
        seen |= {a.status_code for a in answers}
        if all(a.status_code == 402 for a in answers):
            break
    assert seen == {200, 402, 429}
    found = r.counters_match_ledger()
    spent = sum(x["prompt_tokens"] + x["completion_tokens"] for x in found)
    reservation = -(-len(orjson.dumps(BODY)) // 3) + BODY["max_tokens"]  # router's own estimate
    assert 200 - reservation < spent <= 200  # stops within one reservation, never over


@pytest.fixture(params=["redis", "cluster"])
def mortal_state(request: pytest.FixtureRequest) -> Iterator[RedisServer | RedisCluster]:
    """A Redis (or Cluster) of this test's own, which it may kill: durable, so a restart
    brings back what was written before the kill."""
    if request.param == "redis":
        server = RedisServer(extra_args=DURABLE).start()
        yield server
        server.close()
    else:
        cluster = RedisCluster(extra_args=DURABLE).start()
        yield cluster
        cluster.close()


def test_redis_dying_mid_traffic_hangs_nothing_and_loses_no_settlement(
    mortal_state: RedisServer | RedisCluster, sim: Sim, replicas: Callable[..., Replicas]
) -> None:
    r = replicas(mortal_state.url, sim("trinity", latency=0.02), client="limits: {rpm: 100000}")
    settlement_keys: list[str] = []
    statuses: list[int] = []
    slowest = 0.0
    degraded_seen = refused_seen = False

    with httpx.Client(timeout=10) as client:

        def one(i: int, **headers: str) -> httpx.Response:
            nonlocal slowest
            began = time.monotonic()
            answer = client.post(r.url(i) + "/v1/chat/completions", headers={**AUTH, **headers}, json=BODY)
            slowest = max(slowest, time.monotonic() - began)
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                settlement_keys.append(answer.headers["x-settlement-key"])
            return answer

        for i in range(20):
            assert one(i).status_code == 200
        mortal_state.stop()
        for i in range(40):
            answer = one(i)
            assert answer.status_code == 200, answer.text  # local limits: still served
            degraded_seen |= answer.headers.get("x-router-degraded") == "state"
        for i in range(2):
            refused = one(i, **{"X-Idempotency-Key": f"during-{i}"})
            assert refused.status_code == 503 and refused.headers["retry-after"]
            refused_seen = True
        ready = client.get(r.url(0) + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        mortal_state.restart()
        for i in range(20):
            assert one(i).status_code == 200
    assert degraded_seen and refused_seen
    assert slowest < 3.0  # a dead Redis costs a socket timeout, not a hang
    deadline = time.monotonic() + 20
    while True:  # each replica writes its outbox once Redis answers again
        found = r.records()
        if len(found) >= len(settlement_keys) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert sorted(x["settlement_key"] for x in found) == sorted(settlement_keys)  # once each, none lost
    r.counters_match_ledger()
