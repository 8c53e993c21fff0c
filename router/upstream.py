"""The only httpx user: one pooled transport per provider, and the boundary for its errors.

httpx is the API spoken here (Request, Response, AsyncBaseTransport). Requests go to the
provider's transport directly rather than through httpx.AsyncClient: measured, the client
layer adds ~70 µs a request (cookie jar, auth flow, redirect machinery, logging) for
features a proxy must not use. A shared cookie jar would even carry one tenant's provider
cookies into another tenant's calls. The transport under it is chosen in one place
(`transport_factory`) and can be replaced without touching anything else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager

import httpx

from .aiohttp_transport import AiohttpTransport
from .config import Provider, Target
from .errors import (
    UpstreamConnectError,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from .types import RawHeaders

USER_AGENT = b"router/0.1"

# Every exception class httpx exports, mapped explicitly (tests/test_upstream_errors.py
# fails when httpx grows one nobody has decided about).
HTTPX_ERRORS: Mapping[type[Exception], tuple[type[UpstreamError], str]] = {
    httpx.ConnectTimeout: (UpstreamTimeout, "timed out connecting"),
    httpx.ReadTimeout: (UpstreamTimeout, "timed out reading the answer"),
    httpx.WriteTimeout: (UpstreamTimeout, "timed out sending the request"),
    httpx.PoolTimeout: (UpstreamTimeout, "timed out waiting for a free connection"),
    httpx.TimeoutException: (UpstreamTimeout, "timed out"),
    httpx.ConnectError: (UpstreamConnectError, "could not connect"),
    httpx.ProxyError: (UpstreamConnectError, "could not connect through the proxy"),
    httpx.UnsupportedProtocol: (UpstreamConnectError, "has an unusable URL"),
    httpx.InvalidURL: (UpstreamConnectError, "has an unusable URL"),
    httpx.ReadError: (UpstreamConnectionLost, "connection lost while reading the answer"),
    httpx.WriteError: (UpstreamConnectionLost, "connection lost while sending the request"),
    httpx.CloseError: (UpstreamConnectionLost, "connection lost while closing"),
    httpx.NetworkError: (UpstreamConnectionLost, "connection lost"),
    httpx.RemoteProtocolError: (UpstreamConnectionLost, "closed the connection mid-answer"),
    httpx.LocalProtocolError: (UpstreamProtocolError, "could not be sent the request"),
    httpx.ProtocolError: (UpstreamProtocolError, "broke the HTTP protocol"),
    httpx.DecodingError: (UpstreamProtocolError, "sent an answer that could not be decoded"),
    httpx.TooManyRedirects: (UpstreamProtocolError, "redirected (redirects are not followed)"),
    httpx.HTTPStatusError: (UpstreamProtocolError, "answered with an error status"),
    httpx.TransportError: (UpstreamConnectionLost, "failed in transport"),
    httpx.RequestError: (UpstreamConnectionLost, "failed"),
    httpx.HTTPError: (UpstreamConnectionLost, "failed"),
    httpx.CookieConflict: (UpstreamProtocolError, "sent conflicting cookies"),
    httpx.StreamConsumed: (UpstreamProtocolError, "stream was read twice"),
    httpx.StreamClosed: (UpstreamProtocolError, "stream was closed"),
    httpx.ResponseNotRead: (UpstreamProtocolError, "answer was not read"),
    httpx.RequestNotRead: (UpstreamProtocolError, "request was not read"),
    httpx.StreamError: (UpstreamProtocolError, "stream failed"),
}
_MAPPED = tuple(HTTPX_ERRORS)


@contextmanager
def map_httpx_errors(provider: str) -> Iterator[None]:
    """Convert httpx's exceptions into router's upstream errors, naming the provider only.

    The underlying message (hosts, addresses) goes to logs, not to clients.
    """
    try:
        yield
    except _MAPPED as exc:
        for cls in type(exc).__mro__:
            if cls in HTTPX_ERRORS:
                error, what = HTTPX_ERRORS[cls]
                raise error(f"{provider}: {what}", provider=provider) from exc
        raise  # pragma: no cover - every class in _MAPPED is a key


class UpstreamResponse:
    """A provider's answer, after its status and headers arrived."""

    __slots__ = ("_provider", "_response", "headers", "status")

    def __init__(self, response: httpx.Response, provider: str):
        self._response = response
        self._provider = provider
        self.status = response.status_code
        self.headers = response.headers

    async def read(self) -> bytes:
        with map_httpx_errors(self._provider):
            return await self._response.aread()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in whatever pieces the network delivers."""
        with map_httpx_errors(self._provider):
            async for chunk in self._response.aiter_raw():
                yield chunk

    async def aclose(self) -> None:
        with map_httpx_errors(self._provider):
            await self._response.aclose()


TransportFactory = Callable[[Provider], httpx.AsyncBaseTransport]


class Upstream:
    """Every provider's connection pool. Open in the app's lifespan, closed on shutdown."""

    def __init__(self, providers: Mapping[str, Provider], *, transport_factory: TransportFactory):
        self._transports = {name: transport_factory(p) for name, p in providers.items()}
        self._urls = {name: httpx.URL(p.chat_url) for name, p in providers.items()}

    @classmethod
    def pooled(cls, providers: Mapping[str, Provider], *, connect_timeout: float) -> Upstream:
        return cls(providers, transport_factory=lambda _: AiohttpTransport(connect_timeout=connect_timeout))

    async def send(self, target: Target, body: bytes, headers: RawHeaders) -> UpstreamResponse:
        """POST a chat completion; returns once the provider's status and headers arrived."""
        provider = target.provider.name
        request = httpx.Request("POST", self._urls[provider], content=body, headers=headers)
        with map_httpx_errors(provider):
            response = await self._transports[provider].handle_async_request(request)
        return UpstreamResponse(response, provider)

    async def aclose(self) -> None:
        for transport in self._transports.values():
            await transport.aclose()


def base_headers(target: Target, *, stream: bool) -> RawHeaders:
    """The headers every request to `target` carries; forwarded ones are added per request."""
    return [
        (b"content-type", b"application/json"),
        (b"accept", b"text/event-stream" if stream else b"application/json"),
        # A compressed event stream would be buffered by the compressor; ask for none.
        (b"accept-encoding", b"identity"),
        (b"user-agent", USER_AGENT),
        (b"authorization", b"Bearer " + target.key.secret.encode("latin-1")),
    ]
