"""What a client asked for, read once: the facts every later step of a request reads.

The handler builds a Call after parsing, authenticating and validating; from there on
nothing reads the body for `stream`, `n` or `stream_options` again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from . import limits, translate
from .api import Endpoint
from .api.chat import ENDPOINT as CHAT
from .config import Client, Target
from .types import JSON


@dataclass(frozen=True, slots=True)
class Call:
    request_id: str
    """X-Request-Id: the client's, or one router made (context.accept_request_id)."""
    body: JSON
    """The client's request, validated; every attempt translates from it afresh."""
    raw: bytes
    """Its bytes as sent: the idempotency claim hashes them; the estimate counts them."""
    model: str
    client: Client | None
    targets: tuple[Target, ...]
    """The configured targets for `model` that can serve this request (capabilities.serving)."""
    headers: Mapping[bytes, bytes]
    idempotency: str | None
    stream: bool
    wants_usage: bool
    """A stream whose client asked for the usage chunk (stream_options.include_usage)."""
    wants_chunk_usage: bool
    """... and for usage on every chunk (stream_options.chunk_include_usage)."""
    choices: int
    """How many answers it asks for (`n`)."""
    endpoint: Endpoint = CHAT
    """The API it came in by: where providers take it, and how answers and errors read."""
    original: JSON | None = None
    """The client's own body where the endpoint translated it into `body` (Responses, Messages)."""

    @classmethod
    def of(
        cls,
        request_id: str,
        body: JSON,
        raw: bytes,
        *,
        client: Client | None,
        targets: tuple[Target, ...],
        headers: Mapping[bytes, bytes],
        idempotency: str | None,
        endpoint: Endpoint = CHAT,
        original: JSON | None = None,
    ) -> Call:
        return cls(
            request_id=request_id,
            body=body,
            raw=raw,
            model=body["model"],
            client=client,
            targets=targets,
            headers=headers,
            idempotency=idempotency,
            stream=bool(body.get("stream")),
            wants_usage=translate.client_wants_usage(body),
            wants_chunk_usage=translate.client_wants_usage(body, every_chunk=True),
            choices=limits.choices(body),
            endpoint=endpoint,
            original=original,
        )

    @property
    def client_name(self) -> str | None:
        return self.client.name if self.client is not None else None
