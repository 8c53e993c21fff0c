"""Pure: a stream's chunks -> the one `chat.completion` the provider would have answered.

router asks providers for a stream even when its client did not, so that the first-token and
idle timeouts watch the answer as it is made; the client that asked for one JSON answer gets
this aggregate. It is fed what the relay (relay.py) emits: each chunk has the stream's one
envelope, and the usage chunk (`choices: []`) comes last — the provider's usage object, or
router's estimate when the provider reports none.

The result has OpenAI's non-stream shape: every choice has `index`, `message` (`role`,
`content`, `refusal`, and `tool_calls` / `reasoning_content` when the stream had them),
`logprobs` and `finish_reason`. Odd chunks (unknown fields, null values, no choices) are
taken for what they carry and never raise: a provider's quirk must not lose an answer that
was streamed whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from .envelope import COMPLETION

# Top-level fields of a chunk that a non-stream answer carries too (OpenAI's).
_PASSED = ("system_fingerprint", "service_tier")


class _Choice:
    __slots__ = ("calls", "content", "finish", "logprobs", "matched", "reasoning", "refusal", "role")

    def __init__(self) -> None:
        self.role = "assistant"
        # None until a delta sends the field: null and absent are not the same answer.
        self.content: list[str] | None = None
        self.refusal: list[str] | None = None
        self.reasoning: list[str] | None = None
        self.calls: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, list[Any] | None] | None = None
        self.finish: str | None = None
        self.matched: str | None = None
        """The stop string that ended the answer, where the provider names it (vLLM's
        choice-level `stop_reason`): what an Anthropic client reads as `stop_sequence`."""

    def feed(self, choice: dict[str, Any]) -> None:
        delta = choice.get("delta")
        if type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str:
            # Most chunks are one piece of text: appended without looking for anything else.
            if self.content is None:
                self.content = []
            self.content.append(delta["content"])
        elif isinstance(delta, dict):
            if isinstance(delta.get("role"), str) and delta["role"]:
                self.role = delta["role"]
            self.content = _joined(self.content, delta.get("content"))
            self.refusal = _joined(self.refusal, delta.get("refusal"))
            self.reasoning = _joined(self.reasoning, delta.get("reasoning_content"))
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        self._call(call)
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            # Each chunk carries its own tokens' logprobs: the answer's are all of them, in order.
            if self.logprobs is None:
                self.logprobs = {"content": None, "refusal": None}
            for key in ("content", "refusal"):
                tokens = logprobs.get(key)
                known = self.logprobs[key]
                if isinstance(tokens, list):
                    if known is None:
                        self.logprobs[key] = list(tokens)
                    else:
                        known.extend(tokens)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:  # "" is what some gateways send for "not yet"
            self.finish = finish
            matched = choice.get("stop_reason")
            if isinstance(matched, str) and matched:
                self.matched = matched

    def _call(self, call: dict[str, Any]) -> None:
        """One tool call's delta: the first names it, the rest add to its arguments."""
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index: a new id starts a new call, anything else continues the last one.
            new_id = call.get("id")
            fresh = isinstance(new_id, str) and all(c["id"] != new_id for c in self.calls.values())
            last = max(self.calls, default=-1)
            index = last + 1 if fresh or last < 0 else last
        merged = self.calls.setdefault(index, {"id": None, "type": None, "name": None, "arguments": []})
        for key in ("id", "type"):
            if merged[key] is None and isinstance(call.get(key), str) and call[key]:
                merged[key] = call[key]
        function = call.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and function["name"] and merged["name"] is None:
                merged["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                merged["arguments"].append(function["arguments"])

    def result(self, index: int) -> dict[str, Any]:
        calls = [
            {
                "id": c["id"],
                "type": c["type"] or "function",
                "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
            }
            for _, c in sorted(self.calls.items())
        ]
        refusal = "".join(self.refusal) if self.refusal is not None else None
        content = "".join(self.content) if self.content is not None else None
        if not content and (calls or refusal):
            content = None  # as OpenAI answers a tool call or a refusal: no text, not ""
        message: dict[str, Any] = {"role": self.role, "content": content, "refusal": refusal}
        if calls:
            message["tool_calls"] = calls
        if self.reasoning is not None:
            message["reasoning_content"] = "".join(self.reasoning)
        # Copies: feeding more chunks must not change an answer already handed out.
        logprobs = None
        if self.logprobs is not None:
            logprobs = {k: list(v) if v is not None else None for k, v in self.logprobs.items()}
        result = {"index": index, "message": message, "logprobs": logprobs, "finish_reason": self.finish}
        if self.matched is not None:
            result["stop_reason"] = self.matched
        return result


def _joined(parts: list[str] | None, piece: Any) -> list[str] | None:
    """`parts` with `piece` added if it is text: null and absent deltas add nothing."""
    if not isinstance(piece, str):
        return parts
    if parts is None:
        return [piece]
    parts.append(piece)  # in place: a long answer is thousands of deltas
    return parts


class CompletionAggregate:
    """Feed each chunk of one stream in order; `result()` is the whole answer so far."""

    __slots__ = ("_choices", "_envelope", "_usage")

    def __init__(self) -> None:
        self._envelope: dict[str, Any] = {}
        self._choices: dict[int, _Choice] = {}
        self._usage: dict[str, Any] | None = None

    def feed_event(self, data: bytes) -> None:
        """One SSE event's data (sse.data_of); `[DONE]` and what is not a JSON object are skipped."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(chunk, dict):
            self.feed_chunk(chunk)

    def feed_chunk(self, chunk: dict[str, Any]) -> None:
        if not isinstance(chunk, dict):  # whatever a caller's json.loads made of an odd event
            return
        if "id" not in self._envelope:  # the relay gives every chunk the stream's one envelope
            for key in ("id", "created", "model", *_PASSED):
                if chunk.get(key) is not None and key not in self._envelope:
                    self._envelope[key] = chunk[key]
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # the last one: with usage on every chunk, it is the total
            self._usage = usage
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                index = choice.get("index", 0)
                index = index if isinstance(index, int) and not isinstance(index, bool) else 0
                self._choices.setdefault(index, _Choice()).feed(choice)

    def result(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self._envelope.get("id"),
            "object": COMPLETION,
            "created": self._envelope.get("created"),
            "model": self._envelope.get("model"),
            "choices": [self._choices[i].result(i) for i in sorted(self._choices)],
        }
        if self._usage is not None:  # absent: envelope.complete() fills router's estimate
            answer["usage"] = self._usage
        for key in _PASSED:
            if key in self._envelope:
                answer[key] = self._envelope[key]
        return answer
