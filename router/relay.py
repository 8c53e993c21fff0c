"""Pure: what the client sees of one upstream SSE stream, decided event by event.

The relay holds events back until the first one that carries part of the answer (content,
reasoning, a tool call or a finish reason): that event is the stream's commit point. Before
it, any failure can still be retried elsewhere and the client has seen nothing. After it,
events pass through as the provider's bytes.

It gives every event the stream's one envelope (envelope.py), reads usage from the stream,
ends a stream whose client asked for usage with a usage chunk (the provider's, else router's
estimate, which is also what gets settled), hides usage from clients that did not ask for
it, drops malformed events (counted, never forwarded), and decides how a stream that ends
ends: `[DONE]` when the answer finished, an error when it did not — never a truncated answer
that looks complete.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from . import classify, sse
from .envelope import StreamEnvelope, usage_json
from .errors import UpstreamConnectionLost, UpstreamError, UpstreamProtocolError
from .redact import NOTHING, Redactor
from .types import JSON, Usage


class StreamRelay:
    __slots__ = (
        "_answer_id",
        "_choices",
        "_created",
        "_envelope",
        "_finished",
        "_held",
        "_keep_chunk_usage",
        "_splitter",
        "_upstream_model",
        "_usage_json",
        "_usage_sent",
        "answer_events",
        "committed",
        "done",
        "dropped",
        "expects_usage",
        "failure",
        "only_dropped",
        "prompt_tokens",
        "provider",
        "redact",
        "usage",
        "wants_usage",
    )

    def __init__(
        self,
        *,
        provider: str,
        wants_usage: bool,
        expects_usage: bool = False,
        choices: int = 1,
        upstream_model: str = "",
        answer_id: str = "chatcmpl-router",
        created: int = 0,
        prompt_tokens: int = 0,
        keep_chunk_usage: bool = False,
        redact: Redactor = NOTHING,
    ):
        self.provider = provider
        self.redact = redact
        """Router's credentials, taken out of the provider's error text (classify.read_answer)."""
        self.wants_usage = wants_usage
        """The client asked for the usage-only chunk: it ends the stream, provider's or estimated."""
        self.expects_usage = expects_usage
        """router asked the provider for usage: worth waiting for after the answer finished."""
        self.committed = False
        self.done = False
        self.failure: UpstreamError | None = None
        """Why the stream cannot go on; set by feed() after the events before it were returned."""
        self.usage: Usage | None = None
        self._usage_json: JSON | None = None
        """The provider's usage object as it sent it (details included), for the usage chunk."""
        self._usage_sent = False
        self._keep_chunk_usage = keep_chunk_usage
        """The client asked for usage on every chunk (stream_options.chunk_include_usage)."""
        self._upstream_model = upstream_model
        self._answer_id = answer_id
        self._created = created
        self._envelope: StreamEnvelope | None = None
        self.prompt_tokens = prompt_tokens
        """router's estimate of the prompt, for a stream whose provider reports no usage."""
        self.dropped = 0
        """Malformed events dropped."""
        self.only_dropped = False
        """The last feed's complete events were all malformed: no sign of life from the provider."""
        self._choices = max(1, choices)
        self._finished: set[int] = set()
        self._splitter = sse.EventSplitter()
        self._held: list[bytes] = []
        self.answer_events = 0
        """Events relayed that carry part of the answer (not a finish reason alone): ~1 token
        each, the estimate when a provider reports no usage."""

    @property
    def finished(self) -> bool:
        """Every choice has its finish reason: the answer is whole even if `[DONE]` never comes."""
        return len(self._finished) >= self._choices

    @property
    def usage_pending(self) -> bool:
        return self.expects_usage and self.usage is None

    @property
    def model(self) -> str | None:
        """The model the answer names: the provider's, else the upstream model that served it."""
        return self._envelope.model if self._envelope is not None else None

    def estimate(self) -> Usage:
        """router's usage estimate: the prompt's, and one token per event of the answer."""
        return Usage(self.prompt_tokens, self.answer_events)

    def feed(self, data: bytes) -> bytes:
        """Bytes from the provider in, bytes for the client out (b"" while holding back).

        When the provider reports an error or sends something that cannot be relayed,
        `failure` is set and the events before it are still returned: after the commit
        point the client gets them, then the error.
        """
        out = self.feed_events(data)
        return b"".join(out) if out else b""

    def feed_events(self, data: bytes) -> list[bytes]:
        """As feed(), the events one by one (for a reader that takes them apart again)."""
        out: list[bytes] = []
        dropped = self.dropped
        events = 0
        try:
            for event in self._splitter.feed(data):
                if self.done:
                    break
                events += 1
                self._event(event, out)
        except UpstreamError as error:
            self.failure = error
        self.only_dropped = events > 0 and self.dropped - dropped == events
        return out

    def end(self) -> bytes:
        """The provider closed the stream cleanly: the bytes that close the client's stream."""
        return b"".join(self.end_events())

    def end_events(self) -> list[bytes]:
        """As end(), the events one by one."""
        last = self._splitter.flush()
        out: list[bytes] = []
        if last is not None and not self.done:
            self._event(last, out)
        if not self.committed:
            raise UpstreamProtocolError(
                f"{self.provider}: the stream ended before any answer", provider=self.provider
            )
        if not self.done:
            if not self.finished:
                raise UpstreamConnectionLost(
                    f"{self.provider}: the stream ended before the answer finished", provider=self.provider
                )
            self._close(out)
        return out

    def _close(self, out: list[bytes]) -> None:
        if self.wants_usage and not self._usage_sent and self._envelope is not None:
            usage = self._usage_json or usage_json(self.usage or self.estimate())
            out.append(self._envelope.usage_chunk(usage))
            self._usage_sent = True
        out.append(sse.DONE_EVENT)
        self.done = True

    # -- one event -------------------------------------------------------------

    def _event(self, event: bytes, out: list[bytes]) -> None:
        data = sse.data_of(event)
        if data is None:  # a comment or keep-alive: useful to the client's idle timer once streaming
            if self.committed:
                out.append(event)
            return
        if sse.is_done(data):
            if not self.committed:
                raise UpstreamProtocolError(
                    f"{self.provider}: the stream ended before any answer", provider=self.provider
                )
            self._close(out)
            return
        if sse.is_error(event, data):
            # Read like an HTTP error answer: a content-filter event is the client's fault.
            answer = classify.read_answer(200, data, redact=self.redact)
            if not answer.message:
                answer = replace(answer, message="error in the stream")
            raise classify.to_error(self.provider, answer)
        if not self.committed:
            self._before_commit(event, data, out)
            return
        assert self._envelope is not None  # learned from the first chunk
        if not sse.looks_like_json_object(data):
            self.dropped += 1
            return
        if sse.may_hold_usage(data):
            chunk = self._parse(data)
            if chunk is None:
                self.dropped += 1
                return
            if isinstance(chunk.get("usage"), dict):
                self._usage_event(chunk, out)
                return
        elif not self.finished and sse.may_finish(data):
            # (parsed to learn which choice finished: with n > 1 one finishing is not the end)
            chunk = self._parse(data)
            if chunk is None:
                self.dropped += 1
                return
            if not _carries_content(chunk):  # a finish reason alone is no token of the answer
                out.append(self._envelope.fix(event, data))
                return
        self.answer_events += 1
        out.append(self._envelope.fix(event, data))

    def _before_commit(self, event: bytes, data: bytes, out: list[bytes]) -> None:
        chunk = self._parse(data)
        if chunk is None:
            self.dropped += 1
            return
        if self._envelope is None:
            self._envelope = StreamEnvelope(
                chunk, answer_id=self._answer_id, model=self._upstream_model, created=self._created
            )
        if isinstance(chunk.get("usage"), dict):
            if not chunk.get("choices"):  # usage before the answer: it still comes last
                self._keep_usage(chunk)
                return
            self._usage_event(chunk, self._held)
        else:
            self._held.append(self._envelope.fix(event, data))
        if _carries_answer(chunk):
            self.answer_events += _carries_content(chunk)
            self.committed = True
            out.extend(self._held)
            self._held.clear()

    def _usage_event(self, chunk: JSON, out: list[bytes]) -> None:
        """A chunk that reports usage. The usage-only chunk is passed on where the client asked
        for usage; usage on a chunk with choices is moved to the usage chunk at the end (unless
        the client asked for it on every chunk), so the client counts it once."""
        assert self._envelope is not None
        self._keep_usage(chunk)
        if chunk.get("choices"):
            if self.committed:
                self.answer_events += _carries_content(chunk)
            if not self._keep_chunk_usage:
                chunk = {k: v for k, v in chunk.items() if k != "usage"}
            out.append(sse.data_event(self._envelope.encode(chunk)))
        elif self.wants_usage and self.usage is not None:
            out.append(sse.data_event(self._envelope.encode(chunk)))
            self._usage_sent = True

    def _keep_usage(self, chunk: JSON) -> None:
        if Usage.from_json(chunk["usage"]) is not None:  # as sent, details and all
            self._usage_json = chunk["usage"]

    def _parse(self, data: bytes) -> dict[str, Any] | None:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(chunk, dict):
            return None
        usage = Usage.from_json(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    index = choice.get("index", 0)
                    self._finished.add(index if isinstance(index, int) else 0)
        return chunk


def _carries_content(chunk: dict[str, Any]) -> bool:
    """Some choice's delta carries part of the answer (more than its role)."""
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
            return True
    return False


def _carries_answer(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        if choice.get("finish_reason"):
            return True
        delta = choice.get("delta")
        if isinstance(delta, dict) and any(v for k, v in delta.items() if k != "role"):
            return True
    return False
