"""Redis round trips per request, counted on the wire by a TCP relay between router and Redis.

A separate short pass, never used for throughput: a third router process (the full profile)
talks to Redis through the tests' counting relay (tests/redis_relay.py, labelling each round
trip with the time it started), and serves sequential requests from a simulator that answers
after 30 ms. Each request's round trips are split by time: within the first half of the
upstream latency they happened before the upstream call, the rest after it (settlement,
up to the start of the next request, which waits a little so late writes land in the
right request).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.bench import loadgen
from tests.bench.scenarios import Scenario, body
from tests.bench.servers import Child, Profile, start_router, start_sim, write_config
from tests.redis_relay import RoundTripRelay

LATENCY = 0.030
CHUNKS = 20
PAUSE = 0.020


def _count(starts: list[float], start: float, stop: float) -> int:
    return sum(start <= t < stop for t in starts)


def run(
    redis_port: int, router_core: int | None, other_core: int | None, directory: Path, requests: int = 200
) -> dict[str, Any]:
    """Start a simulator and a full-profile router behind the relay; half the requests plain, half streams."""
    return asyncio.run(_run(redis_port, router_core, other_core, directory, requests))


async def _run(
    redis_port: int, router_core: int | None, other_core: int | None, directory: Path, requests: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    relay = RoundTripRelay(redis_port, label=time.perf_counter).start()
    starts: list[float] = relay.round_trips
    relay_port = relay.port
    children: list[Child] = []
    try:
        options = ["--latency", f"{int(LATENCY * 1000)}ms", "--chunks", str(CHUNKS), "--chunk-gap", "2ms"]
        sim, sim_port = await loop.run_in_executor(None, start_sim, "fast", other_core, options)
        children.append(sim)
        profile = Profile("relay", clients=True, redis=True)
        config = write_config(profile, {"fast": sim_port}, directory, f"redis://127.0.0.1:{relay_port}/0")
        router, port = await loop.run_in_executor(
            None, lambda: start_router(profile, config, router_core, directory / "router-relay.log")
        )
        children.append(router)
        _, conn = await loop.create_connection(loadgen.Connection, "127.0.0.1", port)
        out: dict[str, Any] = {"requests": requests, "upstream_latency_ms": LATENCY * 1000}
        for stream in (False, True):
            scenario = Scenario("relay", "relay", 1, stream, "fast")
            payload = body(scenario, "gpt-4o")
            raw = loadgen.request_bytes("127.0.0.1", "/v1/chat/completions", payload, profile.headers)
            for _ in range(5):  # warm: scripts loaded, pools open
                await conn.request(raw)
            await asyncio.sleep(0.2)
            idle_from = time.perf_counter()
            await asyncio.sleep(0.5)
            idle = _count(starts, idle_from, time.perf_counter()) / 0.5
            windows, errors = [], 0
            for _ in range(requests // 2):
                started = time.perf_counter()
                status = await conn.request(raw)
                errors += status != 200 or (stream and not conn.done_seen)
                await asyncio.sleep(PAUSE)
                windows.append((started, time.perf_counter()))
            before = sum(_count(starts, a, a + LATENCY / 2) for a, _ in windows)
            total = sum(_count(starts, a, b) for a, b in windows)
            n = len(windows)
            out["stream" if stream else "plain"] = {
                "before": before / n,
                "after": (total - before) / n,
                "per_request": total / n,
                "chunks": CHUNKS if stream else 0,
                "idle_per_s": idle,
                "errors": errors,
            }
        assert conn.transport is not None
        conn.transport.close()
        return out
    finally:
        for child in reversed(children):
            await loop.run_in_executor(None, child.stop)
        relay.stop()
