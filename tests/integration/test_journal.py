"""The durable outbox with real processes: `router serve` with state.journal, a real redis-server
and a provider simulator. Redis goes down, requests are served on local limits, the router is
stopped (SIGTERM, a rolling update) or killed (SIGKILL), started again, and Redis comes back:
every provider call the simulator saw has exactly one record in the client's ledger stream."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from router import config as configuration
from router import ledger
from router.sim import SimServer
from router.state.journal import SUFFIX
from tests.conftest import CLIENT_KEY
from tests.e2e.conftest import Served, serve, stop
from tests.redis_rig import RedisServer

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5}
SERVED = 5
"""Requests served while Redis is down: few, the test is about none of them being lost."""


def write_config(path: Path, redis: RedisServer, sim: SimServer, journal: Path, *, timeout: str) -> None:
    path.write_text(
        f'state: {{url: "{redis.url}", timeout: {timeout}, journal: "{journal}"}}\n'
        f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
        f"providers:\n  trinity:\n    base_url: {sim.base_url}\n    keys: [sim-key]\n"
        "    models: {gpt-4o: {}}\n"
    )


def records(path: Path) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(configuration.load(str(path))))


def journal_lines(journal: Path) -> list[bytes]:
    return [line for p in journal.glob("*" + SUFFIX) for line in p.read_bytes().splitlines() if line]


def logged(served: Served, text: str) -> list[dict[str, Any]]:
    lines = [orjson.loads(line) for line in served.log_lines() if line.startswith("{")]
    return [line for line in lines if text in line["msg"]]


def wait_for(check: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def outage_then_restart(
    tmp_path: Path, redis: RedisServer, sim: SimServer, *, death: signal.Signals, reload: bool = False
) -> tuple[list[str], Served]:
    """Serve SERVED requests with Redis down, end the router with `death`, start it again and
    bring Redis back. Returns the settlement keys answered, and the second router."""
    journal = tmp_path / "journal"
    path = tmp_path / "providers.yaml"
    write_config(path, redis, sim, journal, timeout="200ms")
    first = serve("--config", str(path))
    try:
        if reload:  # the state section changes: the new store keeps the process's one journal
            write_config(path, redis, sim, journal, timeout="300ms")
            os.kill(first.process.pid, signal.SIGHUP)
            wait_for(lambda: bool(logged(first, "config reloaded")), within=10, what="no reload")
            assert len(list(journal.glob("*" + SUFFIX))) == 1
        redis.stop()
        answered = []
        with httpx.Client(timeout=10) as client:
            for _ in range(SERVED):
                answer = client.post(first.url + "/v1/chat/completions", headers=AUTH, json=BODY)
                assert answer.status_code == 200
                answered.append(answer.headers["x-settlement-key"])
        os.kill(first.process.pid, death)
        first.process.wait(15)
    finally:
        stop(first.process)
    # Whatever the death, the journal holds each settlement, of the client's scope and of the
    # provider key's (what SIGKILL left is in the page cache).
    kept = [orjson.loads(line) for line in journal_lines(journal)]
    assert sorted(s["settlement_key"] for s in kept if s["scope"] == "c:team") == sorted(answered)
    assert {s["settlement_key"] for s in kept} == set(answered)
    if death == signal.SIGTERM:
        said = logged(first, "kept in the journal")
        assert said and all(f"{2 * SERVED} settlement(s)" in line["msg"] for line in said), said
    second = serve("--config", str(path))
    redis.restart()
    return answered, second


def assert_each_once(path: Path, answered: list[str], sim: SimServer) -> None:
    wait_for(lambda: len(records(path)) >= len(answered), within=20, what="records did not arrive")
    time.sleep(0.5)  # a duplicate would come right after
    keys = [r["settlement_key"] for r in records(path)]
    assert len(keys) == len(set(keys)), "a settlement was written twice"
    assert sorted(keys) == sorted(answered)
    assert len(keys) == sim.chat_requests == SERVED


def test_a_rolling_update_during_an_outage_loses_no_settlement(
    tmp_path: Path, fresh_redis: RedisServer, sim: Callable[..., SimServer]
) -> None:
    server = sim("trinity")
    answered, second = outage_then_restart(tmp_path, fresh_redis, server, death=signal.SIGTERM, reload=True)
    try:
        assert_each_once(tmp_path / "providers.yaml", answered, server)
        wait_for(
            lambda: not journal_lines(tmp_path / "journal"), within=5, what="the journal was not emptied"
        )
    finally:
        stop(second.process)
    assert list((tmp_path / "journal").iterdir()) == []  # drained: nothing left behind


def test_a_killed_router_loses_no_settlement(
    tmp_path: Path, fresh_redis: RedisServer, sim: Callable[..., SimServer]
) -> None:
    server = sim("trinity")
    answered, second = outage_then_restart(tmp_path, fresh_redis, server, death=signal.SIGKILL)
    try:
        assert_each_once(tmp_path / "providers.yaml", answered, server)
    finally:
        stop(second.process)
