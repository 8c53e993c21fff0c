"""One simulated API request's answer: the provider's checks, its fault if any, and the wire.

The server (server.py) accepts, counts and records a request, then hands it to an exchange,
which answers it as the dialect would: a chat completion (whole or streamed), embeddings
or rerank results, or the fault the test asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Coroutine
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import orjson

from . import answers, checks, rag, wire
from .faults import Fault
from .http import Connection, Request

if TYPE_CHECKING:
    from .server import SimServer

_DEFAULT_STATUS_ERRORS = {
    429: ("rate_limit_exceeded", "Rate limit reached, please try again later"),
    402: ("insufficient_quota", "Insufficient quota"),
    401: ("invalid_api_key", "Invalid API key"),
    500: ("api_error", "Internal server error"),
    502: ("api_error", "Bad gateway"),
    503: ("api_error", "Service unavailable"),
}

# What each API path answers: the provider's 400s (checks.py) and, for embeddings and rerank,
# the whole answer (rag.py); chat answers are built by answers.py and wire.py.
_CHECKS = {"chat": checks.check, "embeddings": checks.check_embeddings, "rerank": checks.check_rerank}
_RAG_ANSWERS = {"embeddings": rag.embeddings, "rerank": rag.rerank}


class SimExchange:
    """One API request's answer, with its fault if any. `kind`: chat, embeddings or rerank."""

    def __init__(
        self, sim: SimServer, conn: Connection, request: Request, body: Any, fault: Fault | None, kind: str
    ):
        self.sim, self.conn, self.request, self.body, self.fault = sim, conn, request, body, fault
        self.dialect, self.kind = sim.dialect, kind

    def needs_time(self) -> bool:
        paced = self._streaming() or self.sim.paced_whole
        return bool(self.fault or self.sim.latency or (paced and self.sim.chunk_gap))

    def _streaming(self) -> bool:
        return self.kind == "chat" and isinstance(self.body, dict) and self.body.get("stream") is True

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
        if self.kind in _RAG_ANSWERS:
            await self._whole(orjson.dumps(_RAG_ANSWERS[self.kind](self.body)), self._answer_headers())
            return
        created = int(time.time())
        completion_id = sim.next_id()
        result = answers.answer(
            self.dialect, self.body, chunks=sim.chunks, call_id=f"call_{completion_id[-8:]}"
        )
        headers = self._answer_headers()
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
            await self._whole(payload, headers)
            return
        plan = wire.stream(self.dialect, self.body, result, completion_id=completion_id, created=created)
        await self._stream(plan, headers)

    async def _whole(self, payload: bytes, headers: list[tuple[str, str]]) -> None:
        """A whole (not streamed) answer, as its fault has it: late, cut half-way, or whole."""
        fault = self.fault
        if fault is not None and fault.kind == "slow_first_token":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "cut":
            self.conn.respond_cut(payload, headers)
            return
        self.conn.respond_json(200, payload, headers=headers, keep_alive=self.request.keep_alive)

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
        rejection = _CHECKS[self.kind](self.dialect, self.body)
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


def run_now(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that awaits nothing to its end, right here."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an exchange that needs no time awaited something")  # pragma: no cover
