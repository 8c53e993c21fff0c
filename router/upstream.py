"""Every provider's connection pool, and the boundary for its errors.

Requests go through http1.Pool, router's own lean HTTP/1.1 client (see its docstring for
why not httpx or aiohttp). The pool is chosen in one place (`client_factory`) and can be
replaced without touching anything else: tests bring pools that fail on purpose.

Pools are per origin: providers on one host share its connections, and a request's target is
the provider's base path plus the endpoint's (`/chat/completions`, `/embeddings` ...). How a
pool reaches its origin is decided here once, at startup: the proxy from the environment
(router/egress.py) and the trust store from providers.yaml `tls`.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol
from urllib.parse import urlsplit

from . import egress, http1
from .config import TLS, Provider, Target
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


class OriginPool(Protocol):
    """What Upstream needs of the connections to one origin (http1.Pool): send one request for
    a target (path and query) and return once the answer's status and headers arrived, raising
    only http1.HTTPError for what went wrong on the way."""

    async def request(
        self, method: bytes, target: bytes, headers: http1.Headers, body: bytes
    ) -> http1.HTTPResponse: ...

    async def aclose(self) -> None: ...


class UpstreamResponse:
    """A provider's answer, after its status and headers arrived."""

    __slots__ = ("_provider", "_response", "headers", "status")

    def __init__(self, response: http1.HTTPResponse, provider: str):
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

    async def pour(self, into: Callable[[bytes], bool]) -> None:
        """The rest of the body, handed to `into` piece by piece as it arrives (without a task
        switch per piece), until it ends or `into` returns True."""
        try:
            await self._response.pour(into)
        except http1.HTTPError as exc:
            raise mapped(self._provider, exc) from exc

    def close(self) -> None:
        """Synchronous: nothing to wait for, so no task is needed to shield it from cancellation."""
        self._response.close()

    def release(self) -> None:
        """Read to its logical end: the connection is pooled once its last bytes arrive."""
        self._response.release()


ClientFactory = Callable[[Provider], OriginPool]
"""Makes the pool for a provider's origin; called once per origin (and TLS setting)."""

CHAT = "/chat/completions"


class Upstream:
    """Every provider's connection pool. Open in the app's lifespan, closed on shutdown."""

    def __init__(self, providers: Mapping[str, Provider], *, client_factory: ClientFactory):
        pools: dict[tuple[str, TLS], OriginPool] = {}
        self._routes: dict[str, tuple[OriginPool, bytes, bytes]] = {}
        """Provider -> its origin's pool, its base path and its base URL's query."""
        for name, p in providers.items():
            origin, path, query = split_base_url(p.base_url)
            key = (origin, p.tls)
            if key not in pools:
                pools[key] = client_factory(p)
            suffix = f"?{query}".encode("ascii") if query else b""
            self._routes[name] = (pools[key], path.encode("ascii"), suffix)
        self._pools = list(pools.values())

    @classmethod
    def pooled(
        cls,
        providers: Mapping[str, Provider],
        *,
        connect_timeout: float,
        environ: Mapping[str, str] | None = None,
    ) -> Upstream:
        """Real pools. Proxies come from `environ` (the process's environment when None)."""
        routes = egress.from_environ(os.environ if environ is None else environ)
        contexts: dict[TLS, ssl.SSLContext] = {}

        def pool(p: Provider) -> http1.Pool:
            origin, _, _ = split_base_url(p.base_url)
            parts = urlsplit(origin)
            scheme, host = parts.scheme, parts.hostname or ""
            port = parts.port or (443 if scheme == "https" else 80)
            context = None
            if scheme == "https":
                if p.tls not in contexts:
                    contexts[p.tls] = tls_context(p.tls)
                context = contexts[p.tls]
            return http1.Pool(
                origin,
                connect_timeout=connect_timeout,
                ssl_context=context,
                proxy=routes.proxy_for(scheme, host, port),
            )

        return cls(providers, client_factory=pool)

    async def send(
        self, target: Target, body: bytes, headers: RawHeaders, *, endpoint: str = CHAT
    ) -> UpstreamResponse:
        """POST to the provider's `endpoint` (appended to its base URL's path); returns once
        the provider's status and headers arrived."""
        provider = target.provider.name
        pool, path, query = self._routes[provider]
        with map_client_errors(provider):
            response = await pool.request(b"POST", path + endpoint.encode("ascii") + query, headers, body)
        return UpstreamResponse(response, provider)

    async def aclose(self) -> None:
        await asyncio.gather(*(pool.aclose() for pool in self._pools))  # TLS goodbyes overlap


def split_base_url(url: str) -> tuple[str, str, str]:
    """A base URL's origin (scheme://host:port, no userinfo), path (no trailing /) and query."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}", parts.path.rstrip("/"), parts.query


def tls_context(tls: TLS) -> ssl.SSLContext:
    """Verifies certificates and host names; `ca_file` replaces the system's trust store, which
    OpenSSL reads from SSL_CERT_FILE / SSL_CERT_DIR when they are set."""
    return ssl.create_default_context(cafile=tls.ca_file)


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
