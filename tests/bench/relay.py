"""Redis round trips per request, counted on the wire by a TCP relay between router and Redis.

A separate short pass, never used for throughput: a third router process (the full profile)
talks to Redis through the tests' counting relay (tests/redis_relay.py, labelling each round
trip with the time it started), and serves sequential requests from a simulator that answers
after 30 ms. Each request's round trips are split by time: within the first half of the
upstream latency they happened before the upstream call, the rest after it (settlement,
up to the start of the next request, which waits a little so late writes land in the
right request). The process's own round trips (lease renewals, gauges reading budgets) are
told apart by their first command and counted on their own: they are per process, not per
request, however many requests share the seconds they land in.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from importlib import resources
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


def background(opening: bytes) -> bool:
    """A round trip of the process, not of a request: a lease renewal (renew.lua, every 10 s)
    or a gauge's read of budgets (HMGET, every 15 s). A request's are its scripts, acquire and
    settle. `opening`: the round trip's first bytes, `*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>...`."""
    words = opening.split(b"\r\n")
    command = words[2].upper() if len(words) > 2 else b""
    if command in (b"EVALSHA", b"EVAL"):
        return len(words) > 4 and words[4] == RENEW_SHA
    return True


RENEW_SHA = (
    hashlib.sha1(resources.files("router.state").joinpath("lua", "renew.lua").read_bytes())
    .hexdigest()
    .encode()
)


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
            windows, errors = [], 0
            counted = len(relay.round_trips)
            for _ in range(requests // 2):
                started = time.perf_counter()
                status = await conn.request(raw)
                errors += status != 200 or (stream and not conn.done_seen)
                await asyncio.sleep(PAUSE)
                windows.append((started, time.perf_counter()))
            # The relay's thread appends to both lists, one after the other: read as many of each.
            seen = min(len(relay.round_trips), len(relay.openings))
            trips = list(zip(relay.round_trips[counted:seen], relay.openings[counted:seen], strict=True))
            starts = [at for at, opening in trips if not background(opening)]
            before = sum(_count(starts, a, a + LATENCY / 2) for a, _ in windows)
            total = sum(_count(starts, a, b) for a, b in windows)
            n = len(windows)
            out["stream" if stream else "plain"] = {
                "before": before / n,
                "after": (total - before) / n,
                "per_request": total / n,
                "chunks": CHUNKS if stream else 0,
                "background": len(trips) - len(starts),
                "background_s": time.perf_counter() - windows[0][0],
                "errors": errors,
            }
        assert conn.transport is not None
        conn.transport.close()
        return out
    finally:
        for child in reversed(children):
            await loop.run_in_executor(None, child.stop)
        relay.stop()
