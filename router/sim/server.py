"""A provider simulator: one dialect on loopback, with faults, counters and a control API.

Control endpoints, for tests and for `router sim` run as its own process:
    GET  /_sim/stats      {"requests": chat requests seen, "faults": faults injected,
                           "connections": connections accepted}
    GET  /_sim/requests   the recent chat requests: headers and JSON bodies
    POST /_sim/faults     body: a fault spec (see faults.py); replaces the instance's faults
    POST /_sim/reset      clears counters, recorded requests and faults
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

import orjson

from . import answers, checks, wire
from .dialects import DIALECTS, Dialect
from .faults import Fault, FaultPlan, FaultSpecError, parse
from .http import Connection, Request

_DEFAULT_STATUS_ERRORS = {
    429: ("rate_limit_exceeded", "Rate limit reached, please try again later"),
    402: ("insufficient_quota", "Insufficient quota"),
    401: ("invalid_api_key", "Invalid API key"),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
}


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

    @property
    def base_url(self) -> str:
        """What providers.yaml's base_url would be for this simulator."""
        prefix = self.dialect.path.removesuffix("/chat/completions")
        return f"http://{self.host}:{self.port}{prefix}"

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
            data = [{"id": m, "object": "model", "owned_by": self.dialect.name} for m in self.dialect.models]
            conn.respond_json(
                200, orjson.dumps({"object": "list", "data": data}), keep_alive=request.keep_alive
            )
            return
        if request.path != self.dialect.path:
            body = checks.error_body(404, "not_found", f"Invalid URL (POST {request.path})")
            conn.respond_json(404, body, keep_alive=request.keep_alive)
            return
        if request.method != "POST":
            conn.respond_json(
                405, checks.error_body(405, "method_not_allowed", "Use POST"), keep_alive=request.keep_alive
            )
            return
        self.chat_requests += 1
        parsed: Any
        try:
            parsed = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            parsed = None
        self.requests.append(RecordedRequest(request.path, request.headers, parsed, time.monotonic()))
        fault = self._fault_for(request, parsed)
        if fault is not None:
            self.faults_injected += 1
        exchange = _Exchange(self, conn, request, parsed, fault)
        if exchange.needs_time():
            conn.spawn(exchange.run())
        else:
            _run_now(exchange.run())  # the fast path: no task for an answer that needs no waiting

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
                    "requests": self.chat_requests,
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


class _Exchange:
    """One chat request's answer, with its fault if any."""

    def __init__(self, sim: SimServer, conn: Connection, request: Request, body: Any, fault: Fault | None):
        self.sim, self.conn, self.request, self.body, self.fault = sim, conn, request, body, fault
        self.dialect = sim.dialect

    def needs_time(self) -> bool:
        paced = self._streaming() or self.sim.paced_whole
        return bool(self.fault or self.sim.latency or (paced and self.sim.chunk_gap))

    def _streaming(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("stream") is True

    async def run(self) -> None:
        fault, sim, conn = self.fault, self.sim, self.conn
        keep_alive = self.request.keep_alive
        if fault is not None and fault.kind == "reset":
            conn.reset()
            return
        if fault is not None and fault.kind == "silent":
            await conn.closed()
            return
        if sim.latency:
            await asyncio.sleep(sim.latency)
        rejection = self._rejection()
        if rejection is not None:
            conn.respond_json(rejection[0], rejection[1], headers=rejection[2], keep_alive=keep_alive)
            return
        assert isinstance(self.body, dict)
        created = int(time.time())
        completion_id = sim.next_id()
        result = answers.answer(
            self.dialect, self.body, chunks=sim.chunks, call_id=f"call_{completion_id[-8:]}"
        )
        headers = self._answer_headers()
        if fault is not None and fault.kind == "slow_first_token" and not self._streaming():
            await asyncio.sleep(fault.seconds)
        if not self._streaming():
            if sim.chunk_gap and sim.paced_whole:  # generating takes as long, streamed or not:
                plan = wire.stream(  # the stream's pauses, one by one (timers are not exact)
                    self.dialect, self.body, result, completion_id=completion_id, created=created
                )
                for _ in plan.content:
                    await asyncio.sleep(sim.chunk_gap)
            payload = wire.completion(
                self.dialect, self.body, result, completion_id=completion_id, created=created
            )
            if fault is not None and fault.kind == "cut":
                conn.respond_cut(payload, headers)
                return
            conn.respond_json(200, payload, headers=headers, keep_alive=keep_alive)
            return
        plan = wire.stream(self.dialect, self.body, result, completion_id=completion_id, created=created)
        await self._stream(plan, headers)

    def _rejection(self) -> tuple[int, bytes, list[tuple[str, str]]] | None:
        if not self._authorized():
            return 401, checks.error_body(401, "invalid_api_key", "Invalid API key provided"), []
        if self.fault is not None and self.fault.kind == "status":
            status = self.fault.number
            code, message = _DEFAULT_STATUS_ERRORS.get(status, ("api_error", HTTPStatus(status).phrase))
            headers = [("retry-after", self.fault.retry_after)] if self.fault.retry_after else []
            if self.fault.location:
                headers.append(("location", self.fault.location))
            message = self._echoed(self.fault.message or message)
            body = checks.error_body(status, self.fault.code or code, message)
            return status, body, headers
        rejection = checks.check(self.dialect, self.body)
        if rejection is not None:
            return rejection.status, rejection.body(), []
        return None

    def _authorized(self) -> bool:
        scheme, _, key = self.request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key:
            return False
        return self.sim.keys is None or key in self.sim.keys

    def _answer_headers(self) -> list[tuple[str, str]]:
        if not self.dialect.settlement_headers:
            return []
        request_id = self.request.headers.get("x-request-id") or "req_" + os.urandom(8).hex()
        idempotency = self.request.headers.get("x-idempotency-key")
        if idempotency:
            settlement = "stl_" + hashlib.sha256(idempotency.encode()).hexdigest()[:24]
        else:
            settlement = "stl_" + os.urandom(12).hex()
        return [("x-request-id", request_id), ("x-settlement-key", settlement)]

    def _echoed(self, message: str) -> str:
        """The message, quoting the credentials the request carried when the fault says so."""
        if self.fault is None or not self.fault.echo_auth:
            return message
        quoted = [f"Authorization: {self.request.headers.get('authorization', '')}"]
        if "x-api-key" in self.request.headers:
            quoted.append(f"X-Api-Key: {self.request.headers['x-api-key']}")
        return f"{message} (you sent {'; '.join(quoted)})"

    def _stream_error(self, fault: Fault | None) -> None:
        code = fault.code if fault and fault.code else "api_error"
        message = self._echoed(
            fault.message if fault and fault.message else "upstream model failed mid-answer"
        )
        self.conn.send_events([b"data: " + checks.error_body(500, code, message) + b"\n\n"])
        self.conn.end_stream(self.request.keep_alive)

    async def _stream(self, plan: wire.StreamPlan, headers: list[tuple[str, str]]) -> None:
        fault, conn, gap = self.fault, self.conn, self.sim.chunk_gap
        kind = fault.kind if fault is not None else None
        n = fault.number if fault is not None else 0
        conn.start_stream(headers)
        conn.send_events(plan.head)
        if n == 0 and kind == "stall":  # a 200, a role chunk, then silence
            await conn.closed()
            return
        if n == 0 and kind == "cut":
            conn.close()
            return
        if n == 0 and kind == "stream_error":
            self._stream_error(fault)
            return
        if kind == "slow_first_token":
            await asyncio.sleep(fault.seconds)  # type: ignore[union-attr]
        for i, event in enumerate(plan.content, start=1):
            if gap and i > 1:
                await asyncio.sleep(gap)
            if conn.lost:  # the client left: generation stops, as a provider's does
                self.sim.streams_left += 1
                return
            if kind == "malformed" and i == n:
                event = event[: max(8, len(event) // 2)].rstrip(b"\n") + b"\n\n"
            conn.send_events([event])
            if i == n and kind == "cut":
                conn.close()
                return
            if i == n and kind == "stall":
                await conn.closed()
                return
            if i == n and kind == "stream_error":
                self._stream_error(fault)
                return
        if gap:
            await asyncio.sleep(gap)
        tail = plan.tail[:-1] if kind == "no_done" else plan.tail
        conn.send_events(tail)
        if kind == "no_done" and fault is not None and fault.value == "hold":
            await conn.closed()
            return
        conn.end_stream(self.request.keep_alive)


def _run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that awaits nothing to its end, right here."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an exchange that needs no time awaited something")  # pragma: no cover


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard] on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
