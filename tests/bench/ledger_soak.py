"""What Redis keeps per request at steady state, with the ledger exporter on.

A real redis-server, a `router sim` and a `router serve` (and `router ledger export` into
PostgreSQL or JSONL) as processes; traffic from this one: half the requests with an
X-Idempotency-Key, a quarter streamed. After a warm-up, and once the exporter has caught up
and what lives only `state.replay_window` / `state.retention` has had time to expire, Redis's
used_memory is read; then the measured requests, the same wait, and a second read. The
difference over the requests is what each one leaves behind for good.

    python -m tests.bench.ledger_soak --requests 50000            # exporter into JSONL
    python -m tests.bench.ledger_soak --requests 50000 --postgres postgresql://…
    python -m tests.bench.ledger_soak --requests 20000 --baseline --router-dir /tmp/base
        # a checkout without the exporter (its config keys), for the "before" figure

tests/integration/test_ledger_memory.py runs it small, in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.bench.servers import free_port
from tests.redis_rig import RedisServer

ROOT = Path(__file__).resolve().parents[2]
CLIENT_KEY = "sk-soak-client"
WINDOW = 2.0
"""state.replay_window and state.retention for the run: short, so the wait between reads covers them."""


@dataclass
class Result:
    requests: int
    used_before: int
    used_after: int
    peak: int
    seconds: float
    keys_before: int
    keys_after: int
    ledger_entries: int
    """Entries left in the ledger streams at the end (the exporter trims what it has written)."""

    @property
    def bytes_per_request(self) -> float:
        return (self.used_after - self.used_before) / self.requests

    def line(self) -> str:
        return (
            f"{self.requests} requests in {self.seconds:.1f} s ({self.requests / self.seconds:.0f}/s): "
            f"used_memory {self.used_before} -> {self.used_after} bytes "
            f"({self.bytes_per_request:+.1f} per request kept), peak {self.peak}; "
            f"keys {self.keys_before} -> {self.keys_after}, ledger entries left {self.ledger_entries}"
        )


@contextmanager
def _process(argv: list[str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def config_text(
    redis_url: str, sim_url: str, *, baseline: bool, postgres: str | None, jsonl: Path, window: float
) -> str:
    state = f'url: "{redis_url}", retention: {window}s'
    if not baseline:
        state += f", replay_window: {window}s"
    text = (
        f"state: {{{state}}}\n"
        f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n    limits: {{rpm: 10000000}}\n"
        "providers:\n"
        f"  trinity:\n    base_url: {sim_url}\n    keys: [sim-key]\n"
        "    dialect: trinity\n    models: {gpt-4o: {price: {input: 2.5, output: 10}}}\n"
    )
    if not baseline:
        sink = f'postgres: "{postgres}"' if postgres else f'jsonl: "{jsonl}"'
        text += f"ledger: {{{sink}, batch: 1000}}\n"
    return text


async def _traffic(url: str, start: int, count: int, concurrency: int) -> None:
    auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue = iter(range(start, start + count))
    failures: list[int] = []

    async def worker(client: httpx.AsyncClient) -> None:
        for n in queue:
            headers = {**auth, "X-Idempotency-Key": f"soak-{n}"} if n % 2 else auth
            body = {
                "model": "gpt-4o",
                "messages": [{"role": "user", "content": f"request {n}"}],
                "max_tokens": 16,
                "stream": n % 4 == 0,
            }
            answer = await client.post(url + "/v1/chat/completions", headers=headers, json=body)
            if answer.status_code != 200:
                failures.append(answer.status_code)

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {sorted(set(failures))}")


def _settled(redis: RedisServer, *, exported: bool, window: float, within: float = 60.0) -> None:
    """Wait until the exporter has emptied the ledger stream, then for the windows to pass."""
    client = redis.client()
    try:
        deadline = time.monotonic() + within
        while exported and client.xlen("{c:team}:ledger") > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter did not catch up")
            time.sleep(0.2)
        time.sleep(window + 1.5)  # done markers and stored answers expire; Redis's active expiry runs
    finally:
        client.close()


def _used(redis: RedisServer) -> tuple[int, int, int, int]:
    """used_memory, its peak, how many keys, and how many ledger entries Redis holds."""
    client = redis.client()
    try:
        info = client.info("memory")
        keys = client.dbsize()
        entries = sum(client.xlen(key) for key in client.scan_iter(match="*:ledger", _type="stream"))
        return int(info["used_memory"]), int(info["used_memory_peak"]), keys, entries
    finally:
        client.close()


def run(
    requests: int,
    *,
    warmup: int = 1000,
    concurrency: int = 32,
    postgres: str | None = None,
    baseline: bool = False,
    router_dir: Path = ROOT,
    redis: RedisServer | None = None,
    window: float = WINDOW,
) -> Result:
    """One soak: warm-up, first read, `requests` more, second read. Only 127.0.0.1; every
    process it starts is stopped by the time it returns."""
    work = Path(tempfile.mkdtemp(prefix="router-soak-"))
    own_redis = redis is None
    server = redis or RedisServer().start()
    server.client().flushall()
    python = [sys.executable, "-m", "router"]
    env_cwd = router_dir
    sim_port, router_port = free_port(), free_port()
    sim_url, router_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{router_port}"
    config = work / "providers.yaml"
    config.write_text(
        config_text(
            server.url, sim_url, baseline=baseline, postgres=postgres, jsonl=work / "ledger", window=window
        )
    )
    try:
        with _process(
            [*python, "sim", "--dialect", "trinity", "--port", str(sim_port)], env_cwd, work / "sim.log"
        ) as sim:
            _wait_http(sim_url, sim, work / "sim.log")
            with _process(
                [*python, "serve", "--config", str(config), "--port", str(router_port)],
                env_cwd,
                work / "serve.log",
            ) as router:
                _wait_http(router_url + "/healthz", router, work / "serve.log")
                exporter_argv = [*python, "ledger", "export", "--config", str(config)]
                with _exporter(exporter_argv, env_cwd, work, on=not baseline):
                    asyncio.run(_traffic(router_url, 0, warmup, concurrency))
                    _settled(server, exported=not baseline, window=window)
                    before, _, keys_before, _ = _used(server)
                    began = time.monotonic()
                    asyncio.run(_traffic(router_url, warmup, requests, concurrency))
                    seconds = time.monotonic() - began
                    _settled(server, exported=not baseline, window=window)
                    after, peak, keys_after, entries = _used(server)
        return Result(requests, before, after, peak, seconds, keys_before, keys_after, entries)
    finally:
        if own_redis:
            server.close()


@contextmanager
def _exporter(argv: list[str], cwd: Path, work: Path, *, on: bool) -> Iterator[None]:
    if not on:
        yield
        return
    with _process(argv, cwd, work / "export.log"):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--postgres", default=None, help="export into this PostgreSQL (default: JSONL files)")
    parser.add_argument("--baseline", action="store_true", help="no exporter and no new config keys")
    parser.add_argument("--router-dir", type=Path, default=ROOT, help="the checkout whose router runs")
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = run(
        args.requests,
        warmup=args.warmup,
        concurrency=args.concurrency,
        postgres=args.postgres,
        baseline=args.baseline,
        router_dir=args.router_dir,
    )
    print(result.line())


if __name__ == "__main__":
    main()
