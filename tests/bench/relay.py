"""Redis round trips per request, counted on the wire by a TCP relay between router and Redis.

A separate short pass, never used for throughput: a third router process (the full profile)
talks to Redis through a relay in this process, and serves sequential requests from a
simulator that answers after 30 ms. The relay counts round trips per connection: a
client-to-server write that follows a server-to-client reply (or opens the connection)
starts one. Each request's round trips are split by time: within the first half of the
upstream latency they happened before the upstream call, the rest after it (settlement,
up to the start of the next request, which waits a little so late writes land in the
right request).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import loadgen
from tests.bench.scenarios import Scenario, body
from tests.bench.servers import Child, Profile, free_port, start_router, start_sim, write_config

LATENCY = 0.030
CHUNKS = 20
PAUSE = 0.020


@dataclass
class Relay:
    redis_port: int
    starts: list[float] = field(default_factory=list)
    connections: int = 0

    async def serve(self) -> tuple[asyncio.Server, int]:
        port = free_port()
        server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return server, port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)
        except OSError:
            writer.close()
            return
        last = ["reply"]  # direction of the last bytes on this connection

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, outbound: bool) -> None:
            try:
                while data := await src.read(65536):
                    if outbound and last[0] == "reply":
                        self.starts.append(time.perf_counter())
                    last[0] = "request" if outbound else "reply"
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))

    def count(self, start: float, stop: float) -> int:
        return sum(start <= t < stop for t in self.starts)


def run(
    redis_port: int, router_core: int | None, other_core: int | None, directory: Path, requests: int = 200
) -> dict[str, Any]:
    """Start a simulator and a full-profile router behind the relay; half the requests plain, half streams."""
    return asyncio.run(_run(redis_port, router_core, other_core, directory, requests))


async def _run(
    redis_port: int, router_core: int | None, other_core: int | None, directory: Path, requests: int
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    relay = Relay(redis_port)
    server, relay_port = await relay.serve()
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
            idle = relay.count(idle_from, time.perf_counter()) / 0.5
            windows, errors = [], 0
            for _ in range(requests // 2):
                started = time.perf_counter()
                status = await conn.request(raw)
                errors += status != 200 or (stream and not conn.done_seen)
                await asyncio.sleep(PAUSE)
                windows.append((started, time.perf_counter()))
            before = sum(relay.count(a, a + LATENCY / 2) for a, _ in windows)
            total = sum(relay.count(a, b) for a, b in windows)
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
        out["connections"] = relay.connections
        return out
    finally:
        for child in reversed(children):
            await loop.run_in_executor(None, child.stop)
        server.close()
