"""A lean HTTP/1.1 client for provider calls: keep-alive pools over asyncio protocols.

A proxy uses a sliver of an HTTP client: a request whose body is already in bytes, and the
answer's status, headers and body as it arrives. No cookies, redirects, auth flows or
multipart. A pool serves one origin; each request names its own target (the endpoint's path).
An egress proxy (router/egress.py decides which) is reached the two ways HTTP knows: a CONNECT
tunnel with TLS to the provider inside it, or an absolute-form request for an http:// provider.

Measured (README, "Performance"; tests/bench/transports.py), the general-purpose clients
spend most of a proxied request's time on what a proxy never uses: httpx's pool collapsed
under concurrency, and aiohttp under httpx's API cost ~25 % of the router's CPU per request;
this client does the same job in a fraction of that. httptools (llhttp, the parser Node
uses) parses; asyncio does TLS.

Every failure is one of the exceptions below; upstream.py maps them to router's errors.
"""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import urlsplit

import httptools

from .egress import Proxy

Headers = Sequence[tuple[bytes, bytes]]

TERMINATOR_WAIT = 1.0
"""Seconds a connection whose caller is done waits for the body's last bytes to be pooled."""
HIGH_WATER = 256 * 1024
"""Bytes of answer buffered before reading from the socket pauses (a slow client downstream)."""
LOW_WATER = 64 * 1024
CLOSE_WAIT = 0.5
"""Seconds a closing pool waits for its TLS connections to finish their goodbyes."""
MAX_PROXY_HEAD = 16 * 1024
"""Bytes of a proxy's answer to CONNECT read before it is taken for something else."""


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

    def __init__(self, conn: _Connection):
        self._conn: _Connection | None = conn
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


class _Connection(asyncio.Protocol):
    """One keep-alive connection, one exchange at a time."""

    def __init__(self, pool: Pool):
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
        self._pieces.append(body)
        self._buffered += len(body)
        if self._into is not None:  # pour(): each piece is taken here, without waking the reader
            self._pour(body)
            return
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


class Pool:
    """Keep-alive connections to one origin (scheme, host, port); each request names its target."""

    def __init__(
        self,
        origin: str,
        *,
        connect_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        proxy: Proxy | None = None,
        keepalive_expiry: float = 15.0,
        max_idle: int = 1024,
    ):
        """`origin`: `http(s)://host[:port]`, without a path. `ssl_context`: https only, the
        system's trust store when None. `proxy`: reached through it, never straight."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("not an http(s) origin")  # not echoed: a URL may hold a token
        if parts.path not in ("", "/") or parts.query:
            raise ValueError("an origin has no path: each request names its target")
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        authority = parts.netloc.rpartition("@")[2]  # never user:password@
        self._tail = f" HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii")
        self._proxy = proxy
        self._absolute = b""
        """Prefixes each target: an http:// origin through a proxy is asked for in absolute-form."""
        if proxy is not None and self._ssl is None:
            self._absolute = f"http://{authority}".encode("ascii")
            if proxy.authorization:
                self._tail += b"proxy-authorization: " + proxy.authorization + b"\r\n"
        self._connect_timeout = connect_timeout
        self._expiry = keepalive_expiry
        self._max_idle = max_idle
        self._idle: deque[_Connection] = deque()
        self._live: set[_Connection] = set()
        """Every open connection: idle, busy, or waiting for a body's last bytes."""
        self._closed = False
        self._drained: asyncio.Future[None] | None = None
        """Resolved once every connection is gone, when the pool is closing."""

    async def request(self, method: bytes, target: bytes, headers: Headers, body: bytes) -> HTTPResponse:
        """Send a request for `target` (origin-form: path and query); returns once the answer's
        status and headers arrived."""
        conn = self._idle_connection() or await self._connect()
        head = [method, b" ", self._absolute, target, self._tail]
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        head.append(body)
        try:
            await conn.start(b"".join(head))
        except BaseException:
            conn.close()  # cancelled, or failed, with the exchange half done
            raise
        return HTTPResponse(conn)

    def release(self, conn: _Connection) -> None:
        if self._closed or conn.closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def lost(self, conn: _Connection) -> None:
        self._live.discard(conn)
        if not self._live and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def aclose(self) -> None:
        self._closed = True
        self._idle.clear()
        if not self._live:
            return
        self._drained = asyncio.get_running_loop().create_future()
        for conn in list(self._live):
            conn.close()
        # TLS says goodbye (close_notify) before its socket closes, which takes a round trip:
        # wait for it briefly, so that a loop stopping next leaves no socket open, then cut.
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), CLOSE_WAIT)
        except TimeoutError:
            for conn in list(self._live):
                conn.abort()

    def _idle_connection(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        oldest_usable = asyncio.get_running_loop().time() - self._expiry
        while idle and idle[0].idle_since < oldest_usable:
            idle.popleft().close()  # the provider may already have dropped it
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been dropped
            if not conn.closed:
                return conn
        return None

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout):  # the whole setup: proxy, tunnel, TLS
                if self._proxy is not None and self._ssl is not None:
                    conn = await self._tunnel(self._proxy, self._ssl)
                else:
                    conn = await self._open()
        except TimeoutError:
            raise ConnectTimedOut("timed out connecting") from None
        except OSError as exc:  # refused, unreachable, DNS (socket.gaierror), TLS (ssl.SSLError)
            through = " through the proxy" if self._proxy is not None else ""
            raise ConnectFailed(f"could not connect{through} ({type(exc).__name__})") from exc
        if not conn.closed:  # dropped already: lost() ran before it could be added
            self._live.add(conn)
        return conn

    async def _open(self) -> _Connection:
        """A connection to the origin, or for an http:// origin to its proxy."""
        host, port = (self._proxy.host, self._proxy.port) if self._proxy else (self._host, self._port)
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: _Connection(self),
            host,
            port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
        )
        return conn

    async def _tunnel(self, proxy: Proxy, context: ssl.SSLContext) -> _Connection:
        """CONNECT through the proxy, then TLS with the provider inside the tunnel: the proxy
        relays bytes it cannot read, and the certificate checked is the provider's."""
        loop = asyncio.get_running_loop()
        transport, opening = await loop.create_connection(_TunnelOpening, proxy.host, proxy.port)
        try:
            authority = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii")
            if proxy.authorization:
                request += b"proxy-authorization: " + proxy.authorization + b"\r\n"
            transport.write(request + b"\r\n")
            status = await opening.status
            if not 200 <= status < 300:
                # The status only: the proxy's words could echo what it was sent.
                raise ConnectFailed(f"could not connect: the proxy answered CONNECT with {status}")
            conn = _Connection(self)
            tls = await loop.start_tls(transport, conn, context, server_hostname=self._host)
            if tls is None:  # the tunnel closed during the handshake
                raise ConnectFailed("could not connect through the proxy (closed during TLS)")
        except BaseException:
            transport.close()
            raise
        conn.connection_made(tls)  # start_tls hands the transport over without calling it
        return conn


class _TunnelOpening(asyncio.Protocol):
    """The proxy's answer to CONNECT: its status, once its head is complete. What follows the
    head belongs to TLS, which takes the transport over."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._head = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_PROXY_HEAD:
                self._fail("answered CONNECT with something other than HTTP")
            return
        line = self._head.split(b"\r\n", 1)[0].split(b" ", 2)
        if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
            self._fail("answered CONNECT with something other than HTTP")
        elif end + 4 < len(self._head) and line[1].startswith(b"2"):
            self._fail("sent bytes before the tunnel was open")  # TLS has not started: not ours
        else:
            assert self._transport is not None
            self._transport.pause_reading()  # until TLS takes the transport over
            self.status.set_result(int(line[1]))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectFailed("could not connect: the proxy closed the connection"))

    def _fail(self, what: str) -> None:
        self.status.set_exception(ConnectFailed(f"could not connect: the proxy {what}"))
