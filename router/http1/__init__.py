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

from .connection import (
    ConnectFailed,
    ConnectionLost,
    ConnectTimedOut,
    Headers,
    HTTPError,
    HTTPResponse,
    ProtocolViolation,
)
from .pool import Pool

__all__ = [
    "ConnectFailed",
    "ConnectTimedOut",
    "ConnectionLost",
    "HTTPError",
    "HTTPResponse",
    "Headers",
    "Pool",
    "ProtocolViolation",
]
