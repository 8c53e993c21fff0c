"""One keep-alive connection to a provider, one exchange at a time: the request written
whole, the answer's status, headers and body read as they arrive (httptools parses). Every
failure is one of the exceptions here; upstream.py maps them to router's errors.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import httptools

Headers = Sequence[tuple[bytes, bytes]]

TERMINATOR_WAIT = 1.0
"""Seconds a connection whose caller is done waits for the body's last bytes to be pooled."""
HIGH_WATER = 256 * 1024
"""Bytes of answer buffered before reading from the socket pauses (a slow client downstream)."""
LOW_WATER = 64 * 1024


class HTTPError(Exception):
    """Any failure of a provider call below the HTTP status."""


class ConnectFailed(HTTPError):
    """No connection: refused, unreachable, DNS, TLS handshake, a proxy that refused the tunnel."""


class ConnectTimedOut(ConnectFailed):
    pass


class ConnectionLost(HTTPError):
    """The connection closed or broke before the answer was complete."""


class ProtocolViolation(HTTPError):
    """What came back is not HTTP/1.1 we can read."""


class HTTPResponse:
    """A provider's answer once its status and headers arrived. Read it, or iterate its
    chunks, then close(): an answer read to its end gives its connection back to the pool."""

    __slots__ = ("_conn", "headers", "next_chunk", "pour", "status")

    def __init__(self, conn: Connection):
        self._conn: Connection | None = conn
        self.status = conn.status
        self.headers = conn.headers
        self.next_chunk = conn.next_piece
        """The body's next piece, or None at its end."""
        self.pour = conn.pour
        """The rest of the body, handed piece by piece to a callable as it arrives."""

    async def read(self) -> bytes:
        parts = []
        while (data := await self.next_chunk()) is not None:
            parts.append(data)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body in whatever pieces the network delivers."""
        while (data := await self.next_chunk()) is not None:
            yield data

    def close(self) -> None:
        """Done with the answer: its connection is reused if the body was read to its end."""
        conn, self._conn = self._conn, None
        if conn is not None:  # twice must not touch the next exchange on a reused connection
            conn.finished(ending=False)

    def release(self) -> None:
        """Done, having read all the caller needs (a stream's [DONE]): reused if the body's
        last bytes follow within TERMINATOR_WAIT, as they usually do a moment later."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.finished(ending=True)


class Owner(Protocol):
    """Where a connection goes when its exchange is over (pool.Pool)."""

    def release(self, conn: Connection) -> None: ...

    def lost(self, conn: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One keep-alive connection, one exchange at a time."""

    def __init__(self, pool: Owner):
        self._pool = pool
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._waiting: asyncio.TimerHandle | None = None
        self._exchange = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head: asyncio.Future[None] | None = None
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._complete = False
        self._framed = True
        self._keep_alive = False
        self._paused = False
        self._decoder: zlib._Decompress | None = None
        self._release_on_complete = False
        self._fed_decoder = False
        self._into: Callable[[bytes], bool] | None = None
        """While the body is poured (pour()): takes each piece in the protocol's callback."""
        self._poured = False
        self._pour_error: Exception | None = None
        """What `into` raised (a bug in the reader), to raise again where it waits."""
        self.error: HTTPError | None = None

    # -- the exchange, as the pool and HTTPResponse drive it ---------------------------------

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Send one request; the future resolves once the answer's headers arrived."""
        self._reset()
        self._stop_waiting()  # an earlier exchange's wait for its terminator is over
        self._exchange = True
        self._head = self._loop.create_future()
        if self.closed or self.transport is None:  # dropped between connect (or pooling) and now
            self._fail(ConnectionLost("closed the connection before answering"))
        else:
            self.transport.write(request)
        return self._head

    async def next_piece(self) -> bytes | None:
        """The next piece of the body, or None at its end."""
        while True:
            if self._pieces:
                data = self._pieces.popleft()
                self._buffered -= len(data)
                if self._paused and self._buffered < LOW_WATER and not self.closed and self.transport:
                    self._paused = False
                    self.transport.resume_reading()
                if self._decoder is not None:
                    data = self._decode(data)
                    if not data:
                        continue
                return data
            if self.error is not None:
                raise self.error
            if self._complete:
                if self._decoder is not None:
                    decoder, self._decoder = self._decoder, None
                    tail = decoder.flush()
                    if self._fed_decoder and not decoder.eof:
                        self.error = ProtocolViolation("sent a compressed body that was cut short")
                        raise self.error
                    if tail:
                        return tail
                return None
            self._waiter = self._loop.create_future()
            await self._waiter

    async def pour(self, into: Callable[[bytes], bool]) -> None:
        """Hand the rest of the body to `into`, piece by piece as it arrives, from the
        protocol's own callback: a body of N pieces costs the reader one task switch, not N.
        Returns at the body's end, or once `into` returns True (it has all it needs)."""
        while self._pieces:  # what came before pour() was called
            data = self._pieces.popleft()
            self._buffered -= len(data)
            if self._decoder is not None:
                data = self._decode(data)
            if data and into(data):
                return
        self._into, self._poured = into, False
        try:
            while not self._complete and self.error is None and not self._poured:
                self._waiter = self._loop.create_future()
                await self._waiter
        finally:
            self._into = None
        if self._pour_error is not None:
            error, self._pour_error = self._pour_error, None
            raise error
        if self._poured:
            return
        while (piece := await self.next_piece()) is not None:  # a decoder's tail; raises an error
            if into(piece):
                return

    def _pour(self, body: bytes) -> None:
        assert self._into is not None
        try:
            data = self._decode(body) if self._decoder is not None else body
            if data and self._into(data):
                self._poured = True
        except HTTPError:
            pass  # self.error is set: pour() raises it in the reader's task
        except Exception as exc:  # the reader's own failure: raised in its task too
            self._pour_error = exc
        else:
            if not self._poured:
                return
        self._into = None  # what still comes is buffered, for finished() to judge
        self._wake()

    def finished(self, *, ending: bool) -> None:
        """The caller is done with the answer: reuse the connection if it was read to its end
        (`ending`: or when its end comes; an answer abandoned midway closes at once, which also
        tells the provider to stop generating)."""
        if not self._exchange:
            return
        if self.error is None and not self._pieces and self._framed and not self.closed:
            if self._complete:
                self._exchange = False
                if self._keep_alive:
                    self._pool.release(self)
                else:
                    self.close()
                return
            if ending:  # the chunked terminator is still on its way: pool it when it comes
                self._release_on_complete = True
                self._waiting = self._loop.call_later(TERMINATOR_WAIT, self._give_up_waiting)
                return
        self.close()

    def finished_later(self) -> None:
        self._stop_waiting()
        self.finished(ending=True)  # decided again, now that the body is complete

    def _stop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting.cancel()
            self._waiting = None

    def _give_up_waiting(self) -> None:
        if self._release_on_complete:
            self.close()

    def close(self) -> None:
        if self._exchange and not self._complete and self.error is None:
            self._fail(ConnectionLost("closed the connection mid-answer"))  # wake whoever waits
        self._exchange = False
        self._release_on_complete = False
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        """Closed without waiting for anything: a TLS goodbye the provider never answers."""
        self.close()
        if self.transport is not None:
            self.transport.abort()

    def _decode(self, data: bytes) -> bytes:
        assert self._decoder is not None
        self._fed_decoder = True
        try:
            return self._decoder.decompress(data)
        except zlib.error:
            self.error = ProtocolViolation("sent a body that could not be decompressed")
            raise self.error from None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self._exchange or self._complete:
            self.close()  # bytes nobody asked for: the connection cannot be trusted again (an
            return  # answer already complete stays good: its body is in hand)
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(ProtocolViolation(f"broke the HTTP protocol ({type(exc).__name__})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.lost(self)
        if not self._exchange or self._complete:
            return
        if self.status and not self._framed and exc is None:
            self._complete = True  # an answer without length ends when its connection does
            self._wake()
        else:
            what = "mid-answer" if self.status else "before answering"
            self._fail(ConnectionLost(f"closed the connection {what}"))

    def pause_writing(self) -> None:  # a request body is written at once; nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -----------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # an interim answer (100 Continue): the real one follows
            self.headers = {}
            return
        self.status = status
        self._keep_alive = self._parser.should_keep_alive()
        headers = self.headers
        self._framed = "content-length" in headers or "chunked" in headers.get("transfer-encoding", "")
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib, by its header
        elif encoding not in ("identity", ""):
            self._fail(ProtocolViolation(f"answered in an unsupported content-encoding ({encoding[:20]})"))
            self.close()
            return
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._into is not None:  # pour(): each piece is taken here, without waking the reader
            self._pour(body)
            return
        self._pieces.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and not self.closed and self.transport:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self._complete = True
            if self._release_on_complete:
                self._release_on_complete = False
                self.finished_later()
            self._wake()

    # -- waking whoever waits ------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        self.error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: a caller that was cancelled never will
        self._wake()
