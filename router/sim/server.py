"""A provider simulator: one dialect on loopback, with faults, counters and a control API.

It serves POST <prefix>/chat/completions, <prefix>/embeddings and <prefix>/rerank (prefix:
the dialect's path without /chat/completions), each with the same auth, faults, recording
and counting, and GET <prefix>/models.

Control endpoints, for tests and for `router sim` run as its own process:
    GET  /_sim/stats      {"requests": API requests seen (chat, embeddings, rerank),
                           "faults": faults injected, "connections": connections accepted}
    GET  /_sim/requests   the recent API requests: path, headers and JSON bodies
    POST /_sim/faults     body: a fault spec (see faults.py); replaces the instance's faults
    POST /_sim/reset      clears counters, recorded requests and faults
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import orjson

from . import checks
from .dialects import DIALECTS, Dialect
from .exchange import SimExchange, run_now
from .faults import Fault, FaultPlan, FaultSpecError, parse
from .http import Connection, Request


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: Any
    at: float
    """time.monotonic() when it arrived."""


class SimServer:
    """One simulated provider on loopback. Use `start_in_thread()` in tests and --demo."""

    def __init__(
        self,
        dialect: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: str = "",
        latency: float = 0.0,
        chunks: int = 8,
        chunk_gap: float = 0.0,
        paced_whole: bool = False,
        keys: tuple[str, ...] | None = None,
        stream_usage: str | None = None,
        record: int = 1000,
    ):
        base = DIALECTS[dialect]
        self.dialect: Dialect = replace(base, stream_usage=stream_usage) if stream_usage else base
        self.host = host
        self.port = port
        self.faults = FaultPlan(faults)
        self.latency = latency
        self.chunks = chunks
        self.chunk_gap = chunk_gap
        self.paced_whole = paced_whole
        """A whole answer takes as long as its stream would (chunk_gap per event), as a
        provider's does; off, it comes at once (tests that only need the stream paced)."""
        self.keys = keys
        self.requests: deque[RecordedRequest] = deque(maxlen=record)
        self.chat_requests = 0
        self.rag_requests = 0
        """Embeddings and rerank requests."""
        self.faults_injected = 0
        self.streams_left = 0
        """Streams stopped before their end because the client closed the connection."""
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._connections: set[Connection] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._counter = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self._kinds = {
            self.dialect.path: "chat",
            self.dialect.embeddings_path: "embeddings",
            self.dialect.rerank_path: "rerank",
        }

    @property
    def base_url(self) -> str:
        """What providers.yaml's base_url would be for this simulator."""
        return f"http://{self.host}:{self.port}{self.dialect.prefix}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: Connection(self), self.host, self.port, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self._connections):
                connection.abort()
            for task in list(self.tasks):  # stalled and silent exchanges wait forever otherwise
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    def start_in_thread(self) -> SimServer:
        ready = threading.Event()

        def run() -> None:
            loop = _new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._stop = asyncio.Event()
                await self.start()
                ready.set()
                await self._stop.wait()
                await self.close()

            try:
                loop.run_until_complete(main())
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"sim-{self.dialect.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("simulator did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # Host, for the HTTP connections
    def opened(self, conn: Connection) -> None:
        self._connections.add(conn)
        self.connections_accepted += 1

    def closed(self, conn: Connection) -> None:
        self._connections.discard(conn)

    def set_faults(self, spec: str) -> None:
        self.faults.set(spec)

    def reset(self) -> None:
        self.faults.set("")
        self.requests.clear()
        self.chat_requests = 0
        self.rag_requests = 0
        self.streams_left = 0
        self.faults_injected = 0
        self.connections_accepted = 0

    # -- handling ---------------------------------------------------------------------

    def next_id(self) -> str:
        self._counter += 1
        return f"chatcmpl-{self.dialect.name}-{self._counter}"

    def handle(self, request: Request, conn: Connection) -> None:
        if request.path.startswith("/_sim/"):
            conn.respond_json(*self._control(request), keep_alive=request.keep_alive)
            return
        if request.path == self.dialect.models_path and request.method == "GET":
            models = [
                *self.dialect.models,
                *sorted(self.dialect.embedding_models | self.dialect.rerank_models),
            ]
            data = [{"id": m, "object": "model", "owned_by": self.dialect.name} for m in models]
            conn.respond_json(
                200, orjson.dumps({"object": "list", "data": data}), keep_alive=request.keep_alive
            )
            return
        kind = self._kinds.get(request.path)
        if kind is None:
            body = checks.error_body(404, "not_found", f"Invalid URL (POST {request.path})")
            conn.respond_json(404, body, keep_alive=request.keep_alive)
            return
        if request.method != "POST":
            conn.respond_json(
                405, checks.error_body(405, "method_not_allowed", "Use POST"), keep_alive=request.keep_alive
            )
            return
        if kind == "chat":
            self.chat_requests += 1
        else:
            self.rag_requests += 1
        parsed: Any
        try:
            parsed = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            parsed = None
        self.requests.append(RecordedRequest(request.path, request.headers, parsed, time.monotonic()))
        fault = self._fault_for(request, parsed)
        if fault is not None:
            self.faults_injected += 1
        exchange = SimExchange(self, conn, request, parsed, fault, kind)
        if exchange.needs_time():
            conn.spawn(exchange.run())
        else:
            run_now(exchange.run())  # the fast path: no task for an answer that needs no waiting

    def _fault_for(self, request: Request, body: Any) -> Fault | None:
        spec = request.headers.get("x-sim-fault")
        if spec is None and isinstance(body, dict) and isinstance(body.get("sim_fault"), str):
            spec = body["sim_fault"]
        if spec:
            try:
                own = parse(spec)
            except FaultSpecError:
                own = []
            if own:
                return own[0]
        return self.faults.next()

    def _control(self, request: Request) -> tuple[int, bytes]:
        path = request.path
        if path == "/_sim/stats":
            return 200, orjson.dumps(
                {
                    "requests": self.chat_requests + self.rag_requests,
                    "faults": self.faults_injected,
                    "connections": self.connections_accepted,
                }
            )
        if path == "/_sim/requests":
            return 200, orjson.dumps(
                [{"path": r.path, "headers": r.headers, "body": r.body} for r in self.requests]
            )
        if path == "/_sim/faults" and request.method == "POST":
            try:
                self.set_faults(request.body.decode())
            except FaultSpecError as exc:
                return 400, checks.error_body(400, "invalid_fault", str(exc))
            return 200, b'{"ok":true}'
        if path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return 200, b'{"ok":true}'
        return 404, checks.error_body(404, "not_found", f"no control endpoint {path}")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
