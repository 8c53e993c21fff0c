"""Pure: the answer side of a dialect. Every answer and chunk router sends carries the one
OpenAI envelope (`id`, `object`, `created`, `model`, and `usage` where it belongs), whichever
provider answered: the mirror of translate.py.

Providers differ in what they leave out (real200's stream chunks carry neither `model` nor
`created`; a provider may report no usage). What is missing is filled from what router
knows: the upstream model of the target that served the answer (providers.yaml), the time
the answer started, an id of router's own, and its own usage estimate, which is also what
the settlement records as `estimated`. What a provider sends is kept.

A stream's envelope is learned from its first chunk, which the relay parses anyway before
the commit point: a provider whose chunks are whole costs nothing per chunk after that; one
whose chunks lack fields costs a byte splice per chunk; only fields sent with a wrong value
(a null `model`) make chunks be parsed and encoded again.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from . import sse
from .types import JSON, Usage

CHUNK = "chat.completion.chunk"
COMPLETION = "chat.completion"


def _valid(name: str, value: Any) -> bool:
    if name == "created":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, str) and bool(value)


class StreamEnvelope:
    """The envelope of one stream: what its chunks must carry, and how to make them."""

    __slots__ = ("_fields", "_reencode", "_splice", "fingerprint")

    def __init__(self, first: JSON, *, answer_id: str, model: str, created: int):
        wanted: dict[str, Any] = {"id": answer_id, "object": CHUNK, "created": created, "model": model}
        missing: dict[str, Any] = {}
        self._reencode = False
        for name, fallback in wanted.items():
            value = first.get(name)
            if name not in first:
                missing[name] = fallback
            elif not _valid(name, value) or (name == "object" and value != CHUNK):
                self._reencode = True
            else:
                wanted[name] = value
        self._fields = wanted
        """The values every chunk of this stream carries: the provider's where it sent them."""
        fingerprint = first.get("system_fingerprint")
        self.fingerprint = fingerprint if isinstance(fingerprint, str) else None
        self._splice = orjson.dumps(missing)[1:-1] if missing else b""
        """`"model":"…","created":…`: what to insert after each chunk's opening brace."""

    @property
    def model(self) -> str:
        return str(self._fields["model"])

    def fix(self, event: bytes, data: bytes) -> bytes:
        """`event` (whose data is `data`, a JSON object) with the envelope made whole."""
        if self._reencode:
            return sse.data_event(self.encode(orjson.loads(data)))
        if not self._splice:
            return event
        brace = data.find(b"{") + 1
        rest = data[brace:]
        comma = b"," if rest.lstrip()[:1] != b"}" else b""
        return b"data: " + data[:brace] + self._splice + comma + rest + b"\n\n"

    def encode(self, chunk: JSON) -> bytes:
        """A parsed chunk, as the client gets it."""
        return orjson.dumps({**chunk, **self._fields})

    def usage_chunk(self, usage: JSON) -> bytes:
        """The usage-only chunk that ends a stream whose client asked for usage."""
        chunk: JSON = dict(self._fields)
        if self.fingerprint is not None:
            chunk["system_fingerprint"] = self.fingerprint
        chunk["choices"] = []
        chunk["usage"] = usage
        return sse.data_event(orjson.dumps(chunk))


def usage_json(usage: Usage) -> JSON:
    """`usage` in OpenAI's shape; the details only where there are any (router's estimates have none)."""
    out: JSON = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.cached_tokens:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def complete(answer: JSON, *, answer_id: str, model: str, created: int, prompt_tokens: int) -> bool:
    """Make a whole (non-streamed) answer's envelope whole, in place; True if anything changed.

    A missing `usage` is filled with router's estimate (the prompt's, and ~4 characters a
    token of what came back); the caller settles those same numbers, marked estimated."""
    changed = False
    for name, fallback in (("id", answer_id), ("object", COMPLETION), ("created", created), ("model", model)):
        value = answer.get(name)
        if not _valid(name, value) or (name == "object" and value != COMPLETION):
            answer[name] = fallback
            changed = True
    if Usage.from_json(answer.get("usage")) is None:
        answer["usage"] = usage_json(Usage(prompt_tokens, completion_estimate(answer)))
        changed = True
    return changed


def completion_estimate(answer: JSON) -> int:
    """~4 characters a token of every choice's content and tool-call arguments."""
    chars = 0
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for key in ("content", "reasoning_content", "refusal"):
            if isinstance(message.get(key), str):
                chars += len(message[key])
        for call in message.get("tool_calls") or ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                chars += len(function["arguments"])
    return math.ceil(chars / 4)
