"""A real `router serve` process, as `make run` starts it, for the end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import openai
import pytest

from router import config as configuration
from router.serve import DEMO_KEY as DEMO_PROVIDER_KEY
from router.sim import SimServer
from tests.conftest import RouterThread

ROOT = Path(__file__).resolve().parents[2]
ROUTER = [sys.executable, "-m", "router"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    process: subprocess.Popen[str]
    url: str
    banner: list[str]
    output: Path
    """Its stdout (the banner) and stderr (JSON log lines), in a file: a pipe nobody reads
    would fill and stop the router once it has logged enough."""

    def log_lines(self) -> list[str]:
        return self.output.read_text(errors="replace").splitlines()


def serve(*args: str, env: dict[str, str] | None = None) -> Served:
    """Start `router serve ARGS` and wait until it answers /healthz; stopped by PID at teardown."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    output = Path(tempfile.mkstemp(prefix="router-serve-", suffix=".log")[1])
    with output.open("w") as sink:
        process = subprocess.Popen(
            [*ROUTER, "serve", "--port", str(port), *args],
            cwd=ROOT,
            env={**environment, **(env or {})},
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"router serve exited: {output.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        stop(process)
        raise RuntimeError("router serve did not come up")
    banner = [line for line in output.read_text().splitlines() if not line.startswith("{")][:3]
    return Served(process, url, banner, output)


def stop(process: subprocess.Popen[Any]) -> None:
    """End a process this test started, by its PID."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def demo() -> Iterator[Served]:
    """`router serve --config providers.yaml --demo`: the newcomer's first command."""
    served = serve("--config", "providers.yaml", "--demo")
    yield served
    stop(served.process)


# -- the shipped config, one provider at a time ---------------------------------------------------

SHIPPED = configuration.load(ROOT / "providers.yaml", demo=True, env={})
DEMO_KEY = "sk-router-demo"


@dataclass
class Pinned:
    """router serving the shipped config with one provider only, in front of its simulator."""

    provider: str
    router: RouterThread
    sim: SimServer

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.router.url + "/v1", api_key=DEMO_KEY, max_retries=0, timeout=10)

    def accepts(self, model: str, feature: str) -> bool:
        (target, *_) = (t for t in SHIPPED.targets[model] if t.provider.name == self.provider)
        return target.route.accepts is None or feature in target.route.accepts


@pytest.fixture(scope="session")
def pinned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pinned]]:
    started: dict[str, Pinned] = {}
    for name, provider in SHIPPED.providers.items():
        sim = SimServer(provider.dialect or name).start_in_thread()
        ledger_file = str(tmp_path_factory.mktemp(name) / "ledger.jsonl")
        config = configuration.Config.build(
            providers=MappingProxyType({name: provider}),
            clients=SHIPPED.clients,
            routing=SHIPPED.routing,
            state=replace(SHIPPED.state, ledger_file=ledger_file),
        ).with_upstreams({name: sim.base_url}, DEMO_PROVIDER_KEY)
        started[name] = Pinned(name, RouterThread(config).start(), sim)
    yield started
    for p in started.values():
        p.router.stop()
        p.sim.stop()
