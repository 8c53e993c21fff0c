"""Settlement that survives a replica's death and a stalled Redis (SPEC §6), with real processes:
two `router serve` replicas sharing a real redis-server, a provider simulator counting the
calls it served, and the ledger compared against that count.

- A replica SIGKILLed with streams in flight: once its leases have run out, a survivor settles
  each of its requests from the intent admission left (`outcome: replica_lost`), so every call
  the simulator served has exactly one record; an idempotent one's claim lapses with its lease
  and the 409 before that says how long.
- Redis stalled (SIGSTOP) past `state.timeout`: the acquires router gave up on run once Redis
  wakes, but past their deadline, so they take nothing: a retry after the 503's Retry-After
  runs fresh instead of meeting a claim held by nobody.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from router import config as configuration
from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY
from tests.e2e.conftest import Served, serve, stop
from tests.redis_rig import RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ADMIN = {"Authorization": "Bearer admin-secret"}
LEASE = 3.0
"""state.lease_ttl for these replicas: renewed every second, a dead one's requests recovered ~4 s later."""
Sim = Callable[..., SimServer]


def body(stream: bool = False) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "Tell me a story"}],
        "max_tokens": 64,
        "stream": stream,
    }


@pytest.fixture
def config_path(tmp_path: Path) -> Callable[..., Path]:
    def write(state_url: str, sim: SimServer, lease: float = LEASE) -> Path:
        path = tmp_path / "providers.yaml"
        path.write_text(
            f'state: {{url: "{state_url}", replicas: 2, lease_ttl: {lease}s}}\n'
            "admin: {key: admin-secret}\n"
            f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
            "providers:\n"
            f"  trinity:\n    base_url: {sim.base_url}\n    keys: [sim-key]\n"
            "    models: {gpt-4o: {price: {input: 2.5, output: 10}}}\n"
        )
        return path

    return write


@pytest.fixture
def started() -> Iterator[list[Served]]:
    processes: list[Served] = []
    yield processes
    for served in processes:
        stop(served.process)


def records(path: Path) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(configuration.load(str(path))))


def wait_for(check: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


class OpenStream:
    """A stream read in a thread of its own until it ends or its connection is cut."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        self.settlement_key = ""
        self.started = threading.Event()
        self.chunks = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._read, args=(url, headers or {}), daemon=True)
        self._thread.start()

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=30) as client,
                client.stream(
                    "POST", url + "/v1/chat/completions", headers={**AUTH, **headers}, json=body(True)
                ) as r,
            ):
                self.settlement_key = r.headers.get("x-settlement-key", "")
                for _ in r.iter_lines():
                    self.chunks += 1
                    self.started.set()
        except httpx.HTTPError as error:
            self.error = type(error).__name__
        finally:
            self.started.set()

    def join(self) -> None:
        self._thread.join(30)


def test_a_replica_killed_mid_stream_still_settles_every_provider_call_once(
    fresh_redis: RedisServer, sim: Sim, config_path: Callable[..., Path], started: list[Served]
) -> None:
    server = sim("trinity", chunks=60, chunk_gap=0.08)  # 5 s streams: surely in flight at the kill
    path = config_path(fresh_redis.url, server)
    doomed, survivor = serve("--config", str(path)), serve("--config", str(path))
    started += [doomed, survivor]
    with httpx.Client(timeout=10) as client:  # one settled the ordinary way on each
        for replica in (doomed, survivor):
            assert (
                client.post(replica.url + "/v1/chat/completions", headers=AUTH, json=body()).status_code
                == 200
            )

    lost = [OpenStream(doomed.url) for _ in range(3)]
    lost.append(OpenStream(doomed.url, {"X-Idempotency-Key": "cut-short"}))
    finishing = [OpenStream(survivor.url) for _ in range(2)]
    for stream in lost + finishing:
        assert stream.started.wait(10) and stream.chunks > 0
    # A renewal has reported what each doomed stream relayed (the intents hash keeps it).
    redis = fresh_redis.client()
    try:
        wait_for(
            lambda: all(redis.hexists("{c:team}:intents", s.settlement_key + ":t") for s in lost),
            10,
            "no renewal reported the streams' progress",
        )
    finally:
        redis.close()
    os.kill(doomed.process.pid, signal.SIGKILL)
    doomed.process.wait(5)
    # The cut request's claim lives on until its lease runs out (at most 3 s after the last
    # renewal, 1 s apart); the 409 says so rather than "1".
    with httpx.Client(timeout=10) as client:
        conflict = client.post(
            survivor.url + "/v1/chat/completions",
            headers={**AUTH, "X-Idempotency-Key": "cut-short"},
            json=body(True),
        )
    assert conflict.status_code == 409, conflict.text
    assert 1 <= int(conflict.headers["retry-after"]) <= LEASE
    for stream in lost + finishing:
        stream.join()
    assert all(s.error is None for s in finishing)
    assert all(s.error is not None for s in lost)

    wait_for(lambda: len(records(path)) >= server.chat_requests, 15, "the lost streams were not recovered")
    found = records(path)
    keys = [r["settlement_key"] for r in found]
    assert len(keys) == len(set(keys)) == server.chat_requests == 8
    by_key = {r["settlement_key"]: r for r in found}
    for stream in lost:
        record = by_key[stream.settlement_key]
        assert (record["outcome"], record["usage_source"], record["status"]) == (
            "replica_lost",
            "estimated",
            502,
        )
        assert 0 < record["completion_tokens"] < 64  # relayed so far as a renewal reported it, not max_tokens
        assert record["cost"] > 0
    assert all(by_key[s.settlement_key]["outcome"] == "completed" for s in finishing)
    usage = httpx.get(survivor.url + "/admin/usage", headers=ADMIN).json()["clients"]["team"]
    assert usage["total"]["tokens"] == sum(r["prompt_tokens"] + r["completion_tokens"] for r in found)
    metrics = httpx.get(survivor.url + "/metrics").text
    assert "router_settlements_recovered_total 4.0" in metrics

    # With its claim gone, the cut idempotent request runs again: a new provider call, a new record.
    with httpx.Client(timeout=10) as client:
        again = client.post(
            survivor.url + "/v1/chat/completions",
            headers={**AUTH, "X-Idempotency-Key": "cut-short"},
            json=body(True),
        )
    assert again.status_code == 200 and server.chat_requests == 9
    wait_for(lambda: len(records(path)) == 9, 5, "the retry was not settled")


def test_acquires_redis_runs_after_a_stall_take_nothing(
    fresh_redis: RedisServer, sim: Sim, config_path: Callable[..., Path], started: list[Served]
) -> None:
    server = sim("trinity")
    # Leases of the default length: a claim taken for nobody would still be there at the retry.
    path = config_path(fresh_redis.url, server, lease=30.0)
    replica = serve("--config", str(path))
    started.append(replica)
    url = replica.url + "/v1/chat/completions"
    with httpx.Client(timeout=10) as client:
        assert client.post(url, headers=AUTH, json=body()).status_code == 200
    pid = fresh_redis.pid
    assert pid is not None

    async def fire(keys: list[str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(
                *(client.post(url, headers={**AUTH, "X-Idempotency-Key": k}, json=body()) for k in keys)
            )

    keys = [f"stalled-{i}" for i in range(6)]
    os.kill(pid, signal.SIGSTOP)
    try:
        refused = asyncio.run(fire(keys))  # each one's acquire waits in Redis's socket, then gives up
        time.sleep(1.0)  # well past state.timeout (0.25 s): every one was given up on
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [r.status_code for r in refused] == [503] * len(keys)
    wait = max(int(r.headers["retry-after"]) for r in refused)
    assert server.chat_requests == 1
    time.sleep(wait)
    retried = asyncio.run(fire(keys))
    assert [r.status_code for r in retried] == [200] * len(keys), [r.text[:120] for r in retried]
    assert server.chat_requests == 1 + len(keys)
    wait_for(lambda: len(records(path)) == 1 + len(keys), 5, "the retries were not settled")


def test_a_stream_that_outlives_a_redis_stall_longer_than_its_lease_is_not_taken_for_lost(
    fresh_redis: RedisServer, sim: Sim, config_path: Callable[..., Path], started: list[Served]
) -> None:
    """Redis stalled past the lease (and its grace): every intent has run out by Redis's clock
    when it wakes. The replica running the stream renews it at once; the other one waits a
    lease before sweeping, so the stream settles itself, with the provider's usage."""
    lease = 1.5
    server = sim("trinity", chunks=45, chunk_gap=0.1)  # 4.5 s: it outlives the stall
    path = config_path(fresh_redis.url, server, lease=lease)
    runner, other = serve("--config", str(path)), serve("--config", str(path))
    started += [runner, other]
    stream = OpenStream(runner.url)
    assert stream.started.wait(10)
    pid = fresh_redis.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(lease + 1.5)  # past the lease and the one renewal's grace
    finally:
        os.kill(pid, signal.SIGCONT)
    stream.join()
    assert stream.error is None
    wait_for(lambda: len(records(path)) == 1, 10, "the stream was not settled")
    time.sleep(lease + 1.0)  # time for a wrong sweep to have happened
    (record,) = records(path)
    assert record["settlement_key"] == stream.settlement_key
    assert (record["outcome"], record["usage_source"]) == ("completed", "provider")
    assert "router_settlements_recovered_total 0.0" in httpx.get(other.url + "/metrics").text
