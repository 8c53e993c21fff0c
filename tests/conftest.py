"""Shared fixtures: provider simulators and routers on real loopback sockets, each in a thread."""

from __future__ import annotations

import socket
import textwrap
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from router import config as configuration
from router.serve import router_app, uvicorn_config
from router.sim import SimServer
from router.upstream import Upstream
from tests.pg_fixtures import postgres_server  # noqa: F401  (fixture)
from tests.redis_fixtures import fresh_redis, redis_cluster, redis_server  # noqa: F401  (fixtures)

CLIENT_KEY = "sk-test-client-key"


class RouterThread:
    """router serving a config on a free loopback port, in a background thread."""

    def __init__(self, config: configuration.Config, upstream: Upstream | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = config
        # As `router serve` runs it: the same app, protocol (router/edge.py) and uvicorn options.
        self.server = uvicorn.Server(uvicorn_config(router_app(config, upstream=upstream), config.server))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> RouterThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("router did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def sim() -> Iterator[Callable[..., SimServer]]:
    """Start simulators: sim("trinity", faults=..., latency=...). Stopped after the test."""
    started: list[SimServer] = []

    def start(dialect: str, **options: object) -> SimServer:
        server = SimServer(dialect, **options).start_in_thread()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def router() -> Iterator[Callable[..., RouterThread]]:
    """Start routers: router(yaml_text) or router(config). Stopped after the test."""
    started: list[RouterThread] = []

    def start(config: str | configuration.Config, upstream: Upstream | None = None) -> RouterThread:
        if isinstance(config, str):
            config = configuration.parse(textwrap.dedent(config), env={})
        server = RouterThread(config, upstream).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def provider_yaml(name: str, server: SimServer, models: dict[str, str] | list[str], **options: str) -> str:
    """One providers.yaml provider entry pointing at a simulator. Options are raw YAML values."""
    if isinstance(models, list):
        models = {m: "{}" for m in models}
    lines = [
        f"  {name}:",
        f"    base_url: {server.base_url}",
        f"    keys: [{name}-secret-key]",
        f"    dialect: {server.dialect.name}",
    ]
    lines += [f"    {key}: {value}" for key, value in options.items()]
    lines.append("    models:")
    lines += [f"      {model}: {spec}" for model, spec in models.items()]
    return "\n".join(lines) + "\n"


def config_yaml(*providers: str, clients: bool = True, routing: str = "", server: str = "") -> str:
    """A whole config around provider entries; with one client whose key is CLIENT_KEY."""
    text = ""
    if server:
        text += f"server: {server}\n"
    if clients:
        text += f"clients:\n  - name: tests\n    key: {CLIENT_KEY}\n"
    if routing:
        text += f"routing: {routing}\n"
    return text + "providers:\n" + "".join(providers)
