"""An httpx transport over one aiohttp connection pool: the only aiohttp user.

Measured on this project's 2-core machine (README, "Performance"): a bare proxy over
httpx's default pool served ~410 req/s at concurrency 64, and fewer with larger pool
limits; over this transport ~2,600-2,800. aiohttp failures are mapped to httpx's
exception classes here, so upstream.py only ever sees httpx.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import httpx

# Most specific first: the first class the exception is an instance of decides.
AIOHTTP_ERRORS: tuple[tuple[type[BaseException], type[httpx.HTTPError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerFingerprintMismatch, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.NonHttpUrlClientError, httpx.UnsupportedProtocol),
    (aiohttp.RedirectClientError, httpx.TooManyRedirects),  # redirects are never followed anyway
    (aiohttp.UploadAbortedError, httpx.WriteError),
    (aiohttp.ClientOSError, httpx.ReadError),
    (aiohttp.ClientConnectionError, httpx.ReadError),
    (aiohttp.ClientError, httpx.TransportError),
    (ConnectionError, httpx.ReadError),
)


@contextmanager
def map_aiohttp_errors() -> Iterator[None]:
    try:
        yield
    except (aiohttp.ClientError, ConnectionError) as exc:
        for source, target in AIOHTTP_ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise  # pragma: no cover - the last rows above catch every ClientError


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One pool of keep-alive connections. No cookies are kept, no redirects followed."""

    def __init__(
        self, *, connect_timeout: float, max_connections: int = 1024, keepalive_expiry: float = 30.0
    ):
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running event loop that will use it.
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry,
            ttl_dns_cache=300,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Read deadlines belong to the caller (first token, idle, total); only the
            # TCP connect is bounded here. Waiting for a pooled connection is not.
            timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_connect=self._connect_timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
        )
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        with map_aiohttp_errors():
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=request.content,
                allow_redirects=False,
            )
        return httpx.Response(
            response.status,
            headers=list(response.raw_headers),
            stream=_ResponseStream(response),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _ResponseStream(httpx.AsyncByteStream):
    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse):
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with map_aiohttp_errors():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # A connection whose answer was not read to the end cannot be reused.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
