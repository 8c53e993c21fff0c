"""What an API endpoint is to router: the model kind it serves, the provider path it goes to,
and a pair of pure translations between the client's shape and the OpenAI one upstream.

Every endpoint shares one path through router (handlers -> exchange -> proxy -> attempt):
client keys and allow-lists, routing, failover, limits, settlement and idempotency. What
differs is data and pure functions, in the spirit of envoy ai-gateway's one translator per
dialect pair:

    request(body)                  the client's body -> the OpenAI request every attempt
                                   translates from (chat completions, embeddings, rerank)
    answer(upstream, answering)    a whole OpenAI answer -> the client's answer
    stream(answering)              a StreamTranslation: the relayed chat stream -> the
                                   client's event stream, event by event
    error(error)                   how a RouterError reads to this endpoint's clients
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ..errors import RouterError, UpstreamError
from ..types import JSON, Usage
from ..validate import validate

__all__ = [
    "Answering",
    "Endpoint",
    "StreamTranslation",
    "checked_as_chat",
    "naming_params",
    "openai_error",
]


@dataclass(frozen=True, slots=True)
class Answering:
    """What an answer translation knows of its request."""

    request: JSON
    """The client's own body, as it sent it (validated by the endpoint's `request`)."""
    answer_id: str
    """Unique to the request (hex, from its settlement key): the translation adds its prefix
    (`resp_`, `msg_`), so a replayed answer carries the same id."""
    created: int
    """Unix seconds when the answer started."""
    usage: Usage | None = None
    """A whole answer's usage as router settles it: the provider's, or router's estimate where
    it reported none — what the client is told it used, not a zero."""


class StreamTranslation(Protocol):
    """One stream's translation, made per request, fed in order.

    `events` gets the chat stream as the relay hands it to the client, after the commit point:
    whole SSE events, each one of
      - `data: {chunk}\\n\\n`: an OpenAI `chat.completion.chunk`, envelope filled in (id, model,
        created); `choices[0].delta` carries `content`, `tool_calls` (OpenAI's indexed deltas)
        or `reasoning_content`, and `finish_reason` when the answer ends;
      - the usage-only chunk (`choices: []`, `usage`), once, after the answer's last chunk;
      - a comment (`: ...\\n\\n`, a keep-alive);
      - `data: [DONE]\\n\\n`, last, alone in its call.
    It returns the client's bytes for them (b"" when there is nothing to send yet).
    """

    failure: UpstreamError | None
    """Set when the chat stream held something the client's API cannot carry (a tool call
    without a name): the bytes `events` returned end with the error event, and the stream
    ends there, settled as an error."""

    def events(self, events: list[bytes]) -> bytes: ...

    def failed(self, error: RouterError) -> bytes:
        """The stream broke after its commit point: the client's error event(s). Nothing follows."""
        ...


def openai_error(error: RouterError) -> tuple[int, bytes]:
    return error.http_status, error.body()


def checked_as_chat(translate: Callable[[JSON], JSON]) -> Callable[[JSON], JSON]:
    """`translate`, whose chat body is then held to the rules every chat request is (validate.py):
    what a translation let through (an empty conversation) is refused before it goes upstream."""

    def checked(body: JSON) -> JSON:
        chat = translate(body)
        validate(chat)
        return chat

    return checked


def naming_params(
    render: Callable[[RouterError], tuple[int, bytes]], names: Mapping[str, str], *, messages: str
) -> Callable[[RouterError], tuple[int, bytes]]:
    """`render`, with a 400's `param` named as the client sent it. Checks after the translation
    (which targets accept a feature, a model's allowed values, the provider's own 400) name
    the Chat Completions parameter; a translated endpoint's client never sent that one.
    `names`: chat parameter -> the client's; `messages`: what `messages[...]` was."""

    def rendering(error: RouterError) -> tuple[int, bytes]:
        param = error.param
        if param is not None and error.http_status == 400:
            theirs = names.get(param) or (messages if param.startswith("messages[") else None)
            if theirs is not None:
                # The request's own error, rendered for its answer and, kept, for its replays:
                # renamed in place, once (a second pass finds the client's name).
                error.param = theirs
                error.message = error.message.replace(f"'{param}'", f"'{theirs}'")
        return render(error)

    return rendering


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    """Its name in metrics and settlement records: chat, embeddings, rerank, responses, messages."""
    kind: str
    """The kind of model it serves (config.KINDS)."""
    upstream_path: str
    """Where a provider takes it, after the provider's base URL: `/chat/completions` ..."""
    request: Callable[[JSON], JSON]
    """Pure: the client's parsed body -> the OpenAI request body. Raises InvalidRequest naming
    the parameter for what the client got wrong or router cannot serve."""
    answer: Callable[[JSON, Answering], JSON] | None = None
    """Pure: a whole upstream answer (checked, OpenAI envelope filled) -> the client's. None:
    the upstream answer is the client's."""
    stream: Callable[[Answering], StreamTranslation] | None = None
    """A translation per stream; None: the chat stream is the client's."""
    fault: Callable[[JSON, JSON], str | None] | None = None
    """Pure: what makes a whole upstream answer (given the OpenAI request) the provider's
    failure rather than an answer — one embedding short — or None. Checked before the answer
    commits, so another provider can still be tried."""
    usage: Callable[[JSON], Usage | None] | None = None
    """Pure: an answer's usage where it is not a chat completion's (None: not reported)."""
    error: Callable[[RouterError], tuple[int, bytes]] = openai_error
    """How an error reads to this endpoint's clients: (status, body)."""
    api_key_header: bytes | None = None
    """A header that may carry the client key instead of `Authorization: Bearer` (x-api-key)."""
    request_id_header: bytes | None = None
    """Where this API's SDKs read the request id (Anthropic's: `request-id`), besides X-Request-Id."""
