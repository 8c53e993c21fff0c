"""Egress as users have it, on loopback: a provider simulator behind TLS from a throw-away CA
(trustme), and a CONNECT proxy that counts its tunnels, can demand Basic auth, and can refuse.

Both run in threads of their own, so async tests and a RouterThread (uvloop) can use them alike.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from dataclasses import dataclass, field

import trustme

from router.sim import SimServer
from router.sim.http import Connection
from tests.threaded import LoopThread

PROVIDER_HOST = "provider.test"
""".test never resolves (RFC 6761): a provider by this name is reachable only through the proxy."""


class TLSSim(SimServer):
    """The provider simulator serving HTTPS with a certificate from `ca`."""

    def __init__(self, dialect: str, ca: trustme.CA, *, hostname: str = "127.0.0.1", **options: object):
        super().__init__(dialect, **options)  # type: ignore[arg-type]
        self.hostname = hostname
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost", PROVIDER_HOST).configure_cert(self._context)

    @property
    def base_url(self) -> str:
        prefix = self.dialect.path.removesuffix("/chat/completions")
        return f"https://{self.hostname}:{self.port}{prefix}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: Connection(self), self.host, self.port, ssl=self._context
        )
        self.port = self._server.sockets[0].getsockname()[1]


@dataclass
class Tunnel:
    target: str
    """The CONNECT request's host:port."""
    authorization: str | None
    first_bytes: bytes = b""
    """What the client sent first inside the tunnel: a TLS ClientHello, with its SNI in clear."""


@dataclass
class ConnectProxy(LoopThread):
    """An HTTP proxy for CONNECT only: pipes bytes, never reads them."""

    credentials: str | None = None
    """"user:password" to demand (407 without them)."""
    refuse: int | None = None
    """Answer every CONNECT with this status instead."""
    tunnels: list[Tunnel] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.start_thread("connect-proxy")

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        tasks: set[asyncio.Task[None]] = set()

        async def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._handle(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            except asyncio.CancelledError:  # stopping: a tunnel the client still keeps alive
                pass
            finally:
                tasks.discard(task)
                writer.close()

        server = await asyncio.start_server(track, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        await self.listening().wait()
        server.close()
        for task in list(tasks):  # tunnels kept alive by the client's pool
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        method, target, _ = head[0].split(" ", 2)
        fields = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        authorization = next((v for k, v in fields.items() if k.lower() == "proxy-authorization"), None)
        tunnel = Tunnel(target, authorization)
        self.tunnels.append(tunnel)
        expected = (
            f"Basic {base64.b64encode(self.credentials.encode()).decode()}" if self.credentials else None
        )
        if method != "CONNECT":
            status = 405
        elif self.refuse is not None:
            status = self.refuse
        elif expected is not None and authorization != expected:
            status = 407
        else:
            status = 200
        if status != 200:
            writer.write(
                b'HTTP/1.1 %d Refused\r\nproxy-authenticate: Basic realm="test"\r\n'
                b"content-length: 6\r\nconnection: close\r\n\r\nrefuse" % status
            )
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        address = "127.0.0.1" if host == PROVIDER_HOST else host  # the proxy's own resolver
        up_reader, up_writer = await asyncio.open_connection(address, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, first: bool) -> None:
            try:
                while data := await src.read(65536):
                    if first and not tunnel.first_bytes:
                        tunnel.first_bytes = data
                    dst.write(data)
                    await dst.drain()
            finally:
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
