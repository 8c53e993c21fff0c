"""Keep-alive connections to one origin, and how they are opened: straight, through an
egress proxy's CONNECT tunnel (tunnel.py), or to a proxy in absolute form."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from urllib.parse import urlsplit

from ..egress import Proxy
from . import tunnel
from .connection import (
    ConnectFailed,
    Connection,
    ConnectTimedOut,
    Headers,
    HTTPResponse,
)

CLOSE_WAIT = 0.5
"""Seconds a closing pool waits for its TLS connections to finish their goodbyes."""


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
        self._idle: deque[Connection] = deque()
        self._live: set[Connection] = set()
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

    def release(self, conn: Connection) -> None:
        if self._closed or conn.closed or len(self._idle) >= self._max_idle:
            conn.close()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        self._idle.append(conn)

    def lost(self, conn: Connection) -> None:
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

    def _idle_connection(self) -> Connection | None:
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

    async def _connect(self) -> Connection:
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

    async def _open(self) -> Connection:
        """A connection to the origin, or for an http:// origin to its proxy."""
        host, port = (self._proxy.host, self._proxy.port) if self._proxy else (self._host, self._port)
        _, conn = await asyncio.get_running_loop().create_connection(
            lambda: Connection(self),
            host,
            port,
            ssl=self._ssl,
            server_hostname=self._host if self._ssl else None,
        )
        return conn

    async def _tunnel(self, proxy: Proxy, context: ssl.SSLContext) -> Connection:
        conn = Connection(self)
        try:
            await tunnel.open_tls(proxy, self._host, self._port, context, conn)
        except tunnel.TunnelFailed as exc:
            raise ConnectFailed(f"could not connect: {exc}") from None
        return conn
