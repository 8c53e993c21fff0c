"""The API endpoints router serves, each a module with its translations (endpoint.py), and
the paths clients reach them by."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from ..errors import RouterError
from . import anthropic_messages, chat, embeddings, openai_responses, rerank
from .endpoint import Answering, Endpoint, StreamTranslation

ENDPOINTS: Mapping[str, Endpoint] = MappingProxyType(
    {
        e.name: e
        for e in (
            chat.ENDPOINT,
            embeddings.ENDPOINT,
            rerank.ENDPOINT,
            openai_responses.ENDPOINT,
            anthropic_messages.ENDPOINT,
        )
    }
)

PATHS: Mapping[str, Endpoint] = MappingProxyType(
    {
        # Trinity documents its chat path without /v1, and clients configured with such a base
        # URL call the others the same way.
        "/v1/chat/completions": chat.ENDPOINT,
        "/chat/completions": chat.ENDPOINT,
        "/v1/embeddings": embeddings.ENDPOINT,
        "/embeddings": embeddings.ENDPOINT,
        "/v1/rerank": rerank.ENDPOINT,
        "/rerank": rerank.ENDPOINT,
        "/v1/responses": openai_responses.ENDPOINT,
        "/v1/messages": anthropic_messages.ENDPOINT,
    }
)
"""POST paths served by an exchange (app.RouterApp sends them straight to their handler)."""

COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

ERROR_SHAPES: Mapping[str, Callable[[RouterError], tuple[int, bytes]]] = MappingProxyType(
    {
        **{path: e.error for path, e in PATHS.items()},
        COUNT_TOKENS_PATH: anthropic_messages.ENDPOINT.error,
    }
)
"""How errors read on each API path: Anthropic's shape on its paths, OpenAI's elsewhere."""

REQUEST_ID_HEADERS: Mapping[str, bytes] = MappingProxyType(
    {
        path: header
        for path, header in (
            *((path, e.request_id_header) for path, e in PATHS.items()),
            (COUNT_TOKENS_PATH, anthropic_messages.ENDPOINT.request_id_header),
        )
        if header is not None
    }
)
"""Paths whose clients read the request id from a header of their own API (besides X-Request-Id)."""

__all__ = [
    "COUNT_TOKENS_PATH",
    "ENDPOINTS",
    "ERROR_SHAPES",
    "PATHS",
    "REQUEST_ID_HEADERS",
    "Answering",
    "Endpoint",
    "StreamTranslation",
    "anthropic_messages",
    "chat",
    "embeddings",
    "openai_responses",
    "rerank",
]
