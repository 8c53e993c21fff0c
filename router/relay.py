"""Pure: what the client sees of one upstream SSE stream, decided event by event.

The relay holds events back until the first one that carries part of the answer (content,
reasoning, a tool call or a finish reason): that event is the stream's commit point. Before
it, any failure can still be retried elsewhere and the client has seen nothing. After it,
events pass through as the provider's bytes.

It also reads usage from the stream, hides the usage-only chunk from clients that did not
ask for it, and decides how a stream that ends ends: `[DONE]` when the answer finished,
an error when it did not — never a truncated answer that looks complete.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson

from . import classify, sse
from .errors import UpstreamConnectionLost, UpstreamError, UpstreamProtocolError
from .types import Usage


class StreamRelay:
    __slots__ = (
        "_choices",
        "_finished",
        "_held",
        "_splitter",
        "answer_events",
        "committed",
        "done",
        "expects_usage",
        "failure",
        "model",
        "provider",
        "usage",
        "wants_usage",
    )

    def __init__(self, *, provider: str, wants_usage: bool, expects_usage: bool = False, choices: int = 1):
        self.provider = provider
        self.wants_usage = wants_usage
        """The client asked for the usage-only chunk: pass it on."""
        self.expects_usage = expects_usage
        """router asked the provider for usage: worth waiting for after the answer finished."""
        self.committed = False
        self.done = False
        self.failure: UpstreamError | None = None
        """Why the stream cannot go on; set by feed() after the events before it were returned."""
        self.usage: Usage | None = None
        self.model: str | None = None
        self._choices = max(1, choices)
        self._finished: set[int] = set()
        self._splitter = sse.EventSplitter()
        self._held: list[bytes] = []
        self.answer_events = 0
        """Events relayed that carry part of the answer: ~1 token each, the estimate when a
        provider reports no usage."""

    @property
    def finished(self) -> bool:
        """Every choice has its finish reason: the answer is whole even if `[DONE]` never comes."""
        return len(self._finished) >= self._choices

    @property
    def usage_pending(self) -> bool:
        return self.expects_usage and self.usage is None

    def feed(self, data: bytes) -> bytes:
        """Bytes from the provider in, bytes for the client out (b"" while holding back).

        When the provider reports an error or sends something that cannot be relayed,
        `failure` is set and the events before it are still returned: after the commit
        point the client gets them, then the error.
        """
        out: list[bytes] = []
        try:
            for event in self._splitter.feed(data):
                if self.done:
                    break
                self._event(event, out)
        except UpstreamError as error:
            self.failure = error
        return b"".join(out) if out else b""

    def end(self) -> bytes:
        """The provider closed the stream cleanly: the bytes that close the client's stream."""
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
            out.append(sse.DONE_EVENT)
            self.done = True
        return b"".join(out)

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
            self.done = True
            out.append(sse.DONE_EVENT)
            return
        if sse.is_error(event, data):
            # Read like an HTTP error answer: a content-filter event is the client's fault.
            answer = classify.read_answer(200, data)
            if not answer.message:
                answer = replace(answer, message="error in the stream")
            raise classify.to_error(self.provider, answer)
        if not self.committed:
            self._before_commit(event, data, out)
            return
        if sse.may_hold_usage(data):
            chunk = self._parse(data)
            if chunk is not None and self._usage_only(chunk):
                return
        if not self.finished and sse.may_finish(data):
            self._parse(data)  # which choice finished: with n > 1 one finishing is not the end
        if not sse.looks_like_json_object(data):
            self._malformed(data)
            return
        self.answer_events += 1
        out.append(event)

    def _before_commit(self, event: bytes, data: bytes, out: list[bytes]) -> None:
        chunk = self._parse(data)
        if chunk is None:
            raise UpstreamProtocolError(
                f"{self.provider}: sent a malformed stream chunk", provider=self.provider
            )
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if self._usage_only(chunk):
            return
        self._held.append(event)
        if _carries_answer(chunk):
            self.answer_events += 1
            self.committed = True
            out.extend(self._held)
            self._held.clear()

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

    def _usage_only(self, chunk: dict[str, Any]) -> bool:
        """True when `chunk` is the usage-only chunk and the client did not ask to see it."""
        return not self.wants_usage and not chunk.get("choices") and isinstance(chunk.get("usage"), dict)

    def _malformed(self, data: bytes) -> None:
        # A broken chunk cannot be trusted to say what it carried: skipping one that began as
        # JSON could drop part of the answer silently. Only non-JSON noise is skipped.
        if data.lstrip()[:1] in (b"{", b"["):
            raise UpstreamProtocolError(
                f"{self.provider}: sent a malformed stream chunk", provider=self.provider
            )


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
