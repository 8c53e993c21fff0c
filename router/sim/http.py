"""A minimal HTTP/1.1 server connection over raw asyncio, for the simulators.

ASGI cannot reset a connection before its headers or cut a body mid-chunk; a protocol that
owns its transport can. httptools (installed with uvicorn[standard]) parses requests.
Requests on one connection are answered one at a time, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import httptools


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


class Host(Protocol):
    """What a connection needs from the server it belongs to."""

    tasks: set[asyncio.Task[None]]

    def handle(self, request: Request, conn: Connection) -> None: ...
    def opened(self, conn: Connection) -> None: ...
    def closed(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection: parses requests with httptools, answers one at a time."""

    def __init__(self, host: Host):
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._queue: deque[Request] = deque()
        self._busy = False
        self._lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.host.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.closed(self)
        if not self._lost.done():
            self._lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            body = (
                b'{"error":{"message":"malformed HTTP request","type":"invalid_request_error","code":null}}'
            )
            self.respond_json(400, body, keep_alive=False)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        path = self._url.split(b"?", 1)[0].decode("latin-1")
        request = Request(
            self.parser.get_method().decode(),
            path,
            self._headers,
            b"".join(self._body),
            self.parser.should_keep_alive(),
        )
        self._queue.append(request)
        if not self._busy:
            self._next()

    # handling, one request at a time per connection
    def _next(self) -> None:
        while self._queue and not self._busy:
            self._busy = True
            self.host.handle(self._queue.popleft(), self)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.host.tasks.add(task)
        task.add_done_callback(self._exchange_done)

    def _exchange_done(self, task: asyncio.Task[None]) -> None:
        self.host.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.abort()  # a simulator bug must not leave the client waiting forever

    def _done(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.close()
            return
        self._busy = False
        self._next()

    async def closed(self) -> None:
        await self._lost

    @property
    def lost(self) -> bool:
        """The client closed the connection (or it was closed here)."""
        return self._lost.done()

    # writing
    def respond_json(
        self, status: int, body: bytes, *, headers: Sequence[tuple[str, str]] = (), keep_alive: bool
    ) -> None:
        head = _status_line(status) + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        if not keep_alive:
            head += b"connection: close\r\n"
        self._write(head + b"\r\n" + body)
        self._done(keep_alive)

    def respond_cut(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        head = _status_line(200) + b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        self._write(head + b"\r\n" + body[: len(body) // 2])
        self.close()

    def start_stream(self, headers: list[tuple[str, str]]) -> None:
        head = _status_line(200) + b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
        head += b"transfer-encoding: chunked\r\n"
        head += b"".join(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers)
        self._write(head + b"\r\n")

    def send_events(self, events: list[bytes]) -> None:
        if events:
            data = b"".join(events)
            self._write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self, keep_alive: bool) -> None:
        self._write(b"0\r\n\r\n")
        self._done(keep_alive)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def reset(self) -> None:
        """Close with RST instead of FIN: what a crashed or overloaded peer looks like."""
        if self.transport is None:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()
