"""CONNECT through an HTTP proxy: the tunnel a TLS connection to a provider runs inside.

The proxy relays bytes it cannot read: TLS runs with the provider itself, inside the tunnel,
so the certificate checked is the provider's. What a proxy says is never repeated (it could
echo what it was sent): a failure names the proxy's status only.
"""

from __future__ import annotations

import asyncio
import ssl

from ..egress import Proxy

MAX_PROXY_HEAD = 16 * 1024
"""Bytes of a proxy's answer to CONNECT read before it is taken for something else."""


class TunnelFailed(Exception):
    """The proxy would not, or could not, open the tunnel; the message is safe to show."""


async def open_tls(
    proxy: Proxy, host: str, port: int, context: ssl.SSLContext, protocol: asyncio.Protocol
) -> None:
    """CONNECT to `host:port` through `proxy`, then TLS with `host` inside the tunnel; the
    TLS transport is handed to `protocol` (connection_made). Raises TunnelFailed, or OSError
    (ssl.SSLError included) for what the network or the handshake said."""
    loop = asyncio.get_running_loop()
    transport, opening = await loop.create_connection(_TunnelOpening, proxy.host, proxy.port)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        request = f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n".encode("ascii")
        if proxy.authorization:
            request += b"proxy-authorization: " + proxy.authorization + b"\r\n"
        transport.write(request + b"\r\n")
        status = await opening.status
        if not 200 <= status < 300:
            raise TunnelFailed(f"the proxy answered CONNECT with {status}")
        tls = await loop.start_tls(transport, protocol, context, server_hostname=host)
        if tls is None:  # the tunnel closed during the handshake
            raise TunnelFailed("the proxy closed the tunnel during TLS")
    except BaseException:
        transport.close()
        raise
    protocol.connection_made(tls)  # start_tls hands the transport over without calling it


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
            self.status.set_exception(TunnelFailed("the proxy closed the connection"))

    def _fail(self, what: str) -> None:
        self.status.set_exception(TunnelFailed(f"the proxy {what}"))
