"""Every provider's connection pool, and the boundary for its errors.

Requests go through http1.Pool, router's own lean HTTP/1.1 client (see its docstring for
why not httpx or aiohttp). The client is chosen in one place (`client_factory`) and can be
replaced without touching anything else: tests bring clients that fail on purpose.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

from . import http1
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

# Every exception class the client raises, most specific first (tests/unit/test_error_mapping.py
# fails when http1 grows one nobody has decided about).
CLIENT_ERRORS: tuple[tuple[type[http1.HTTPError], type[UpstreamError]], ...] = (
    (http1.ConnectTimedOut, UpstreamTimeout),
    (http1.ConnectFailed, UpstreamConnectError),
    (http1.ConnectionLost, UpstreamConnectionLost),
    (http1.ProtocolViolation, UpstreamProtocolError),
    (http1.HTTPError, UpstreamConnectionLost),
)


@contextmanager
def map_client_errors(provider: str) -> Iterator[None]:
    """Convert the client's exceptions into router's upstream errors, naming the provider only.

    What the client says is about the exchange (never hosts or addresses), so it may be kept.
    """
    try:
        yield
    except http1.HTTPError as exc:
        raise mapped(provider, exc) from exc


def mapped(provider: str, exc: http1.HTTPError) -> UpstreamError:
    for source, error in CLIENT_ERRORS:
        if isinstance(exc, source):
            return error(f"{provider}: {exc}", provider=provider)
    raise AssertionError("unreachable: the last row matches every HTTPError")  # pragma: no cover


class Client(Protocol):
    """What Upstream needs of a provider's connection pool (http1.Pool)."""

    async def post(self, headers: http1.Headers, body: bytes) -> http1.Response: ...

    async def aclose(self) -> None: ...


class UpstreamResponse:
    """A provider's answer, after its status and headers arrived."""

    __slots__ = ("_provider", "_response", "headers", "status")

    def __init__(self, response: http1.Response, provider: str):
        self._response = response
        self._provider = provider
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        """Lower-case names; repeated headers joined with ", "."""

    async def read(self) -> bytes:
        with map_client_errors(self._provider):
            return await self._response.read()

    async def next_chunk(self) -> bytes | None:
        """The body's next piece as the network delivered it; None at its end.

        A plain coroutine, not an async generator: a stream calls it once per chunk, and
        each generator layer cost a frame switch and a context manager per chunk."""
        try:
            return await self._response.next_chunk()
        except http1.HTTPError as exc:
            raise mapped(self._provider, exc) from exc

    def close(self) -> None:
        """Synchronous: nothing to wait for, so no task is needed to shield it from cancellation."""
        self._response.close()

    def release(self) -> None:
        """Read to its logical end: the connection is pooled once its last bytes arrive."""
        self._response.release()


ClientFactory = Callable[[Provider], Client]


class Upstream:
    """Every provider's connection pool. Open in the app's lifespan, closed on shutdown."""

    def __init__(self, providers: Mapping[str, Provider], *, client_factory: ClientFactory):
        self._clients = {name: client_factory(p) for name, p in providers.items()}

    @classmethod
    def pooled(cls, providers: Mapping[str, Provider], *, connect_timeout: float) -> Upstream:
        return cls(
            providers, client_factory=lambda p: http1.Pool(p.chat_url, connect_timeout=connect_timeout)
        )

    async def send(self, target: Target, body: bytes, headers: RawHeaders) -> UpstreamResponse:
        """POST a chat completion; returns once the provider's status and headers arrived."""
        provider = target.provider.name
        with map_client_errors(provider):
            response = await self._clients[provider].post(headers, body)
        return UpstreamResponse(response, provider)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


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
