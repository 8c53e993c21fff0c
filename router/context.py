"""One request's record: ids, timings, attempts, what was settled.

The envelope (middleware.py) creates it; the handler notes the client and model; the
exchange writes what the attempts did and what was settled, once, when it knows; the
access log and the metrics read it when the request ends.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .types import RawHeaders, Usage

if TYPE_CHECKING:
    from .config import Target

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}\Z")
SCOPE_KEY = "router.ctx"


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


def accept_request_id(value: bytes | None) -> str:
    """The client's X-Request-Id if it is valid (SPEC §3), else a new one: never refused."""
    if value is not None and _REQUEST_ID.match(value):
        return value.decode("ascii")
    return new_request_id()


@dataclass(slots=True)
class RequestContext:
    request_id: str
    started: float
    """time.perf_counter() when the request arrived."""
    ended: float | None = None
    """time.perf_counter() when the answer's last bytes were handed to the server: what the
    client waited for (a settlement's reply may still be awaited after: Settling.written)."""
    upstream_wait: float = 0.0
    """Seconds spent waiting on providers (attempts, backoffs, Retry-After) before the response started."""
    upstream_headers: float | None = None
    """The answering attempt's time to its response headers, in seconds."""
    first_token: float | None = None
    """The answering attempt's time to its first content (streams) or its answer, in seconds."""
    attempts: int = 0
    """Upstream requests actually sent (SPEC §8: not skipped targets, not waits)."""
    provider: str | None = None
    target: Target | None = None
    """The target of the last attempt (the answering one, once there is an answer)."""
    settlement_key: str | None = None
    client: str | None = None
    """The authenticated client's name, once known."""
    model: str | None = None
    """The requested model, once known to be a configured one (so it may be a label)."""
    endpoint: str | None = None
    """The API endpoint's name (api.Endpoint.name: chat, embeddings ...), set by its handler:
    a request with one gets its metrics and log line when it ends."""
    outcome: str | None = None
    """How the request ended, for its log line: completed, error, client_disconnected, replayed."""
    tokens: Usage | None = None
    """What was settled."""
    streamed: bool = False
    overhead: float | None = None
    """The router's own time until the answer started (as in Server-Timing)."""
    headers: RawHeaders = field(default_factory=list)
    """More headers for every response to this request: rate-limit windows, degraded state."""

    def response_headers(self) -> RawHeaders:
        """X-Router-Provider, X-Router-Attempts and Server-Timing, as of now."""
        self.overhead = max(0.0, time.perf_counter() - self.started - self.upstream_wait)
        timing = f"router;dur={self.overhead * 1000:.3f}"
        if self.upstream_headers is not None:
            timing += f", upstream;dur={self.upstream_headers * 1000:.3f}"
        headers: RawHeaders = [(b"server-timing", timing.encode())]
        if self.attempts:
            headers.append((b"x-router-attempts", str(self.attempts).encode()))
        if self.provider is not None:
            headers.append((b"x-router-provider", self.provider.encode()))
        if self.settlement_key is not None:
            headers.append((b"x-settlement-key", self.settlement_key.encode()))
        return headers + self.headers if self.headers else headers
