"""The output items of a streamed response as they grow, delta by delta (stream.py).

Each growing text keeps its delta event's bytes around the changing values (the sequence
number and the delta), so a delta costs one `orjson.dumps` of its text.
"""

from __future__ import annotations

import orjson

from ...types import JSON
from .objects import function_call_item, message_item, reasoning_item, refusal_part, text_part

END = b"}\n\n"


class Text:
    """A text that grows by deltas, with its delta event's bytes around the changing values."""

    __slots__ = ("_head", "_tail", "pieces")

    def __init__(self, event: bytes, where: JSON):
        self._head = b'event: %b\ndata: {"type":"%b","sequence_number":' % (event, event)
        self._tail = b"," + orjson.dumps(where)[1:-1] + b',"delta":'
        self.pieces: list[str] = []

    def delta(self, sequence_number: int, piece: str, end: bytes = END) -> bytes:
        self.pieces.append(piece)
        return b"%b%d%b%b%b" % (self._head, sequence_number, self._tail, orjson.dumps(piece), end)

    def joined(self) -> str:
        return "".join(self.pieces)


class Part:
    """A content part of a message: `output_text` or `refusal`."""

    __slots__ = ("done", "kind", "logprobs", "text")

    def __init__(self, kind: str, text: Text):
        self.kind = kind
        self.text = text
        self.logprobs: list[JSON] = []
        self.done = False

    def result(self) -> JSON:
        text = self.text.joined()
        return text_part(text, self.logprobs) if self.kind == "output_text" else refusal_part(text)


class Message:
    __slots__ = ("final", "id", "index", "parts")

    def __init__(self, id: str, index: int):
        self.id = id
        self.index = index
        """Its output_index."""
        self.parts: list[Part] = []
        self.final: JSON | None = None
        """The item as its `response.output_item.done` gave it: the response's output repeats it."""

    def result(self, status: str) -> JSON:
        return self.final or message_item(self.id, [p.result() for p in self.parts], status)


class Reasoning:
    __slots__ = ("final", "id", "index", "text")

    def __init__(self, id: str, index: int):
        self.id = id
        self.index = index
        self.text = Text(b"response.reasoning_summary_text.delta", at(id, index, summary_index=0))
        self.final: JSON | None = None

    def result(self, status: str) -> JSON:
        return self.final or reasoning_item(self.id, self.text.joined(), status)


class Call:
    __slots__ = ("arguments", "call_id", "final", "id", "index", "name")

    def __init__(self, id: str, index: int, call_id: str, name: str):
        self.id = id
        self.index = index
        self.call_id = call_id
        self.name = name
        self.arguments = Text(b"response.function_call_arguments.delta", at(id, index))
        self.final: JSON | None = None

    def result(self, status: str) -> JSON:
        return self.final or function_call_item(
            self.id, self.call_id, self.name, self.arguments.joined(), status
        )


Item = Message | Reasoning | Call


def at(item_id: str, output_index: int, **index: int) -> JSON:
    """Where a delta belongs: its item and output index, and its content or summary index."""
    return {"item_id": item_id, "output_index": output_index, **index}
