"""The relayed chat stream -> Anthropic's Messages stream, event by event.

Anthropic's stream is `event: <type>\\ndata: <json>\\n\\n` events:

    message_start        the message, content empty, stop_reason null, usage zero: the real
                         usage is only known at the end
    ping                 once, after message_start
    content_block_start  one block at a time, index 0, 1, 2 ...: `thinking` (from chat's
    content_block_delta    reasoning_content), `text` (content, and a refusal's text), `tool_use`
    content_block_stop     (one per chat tool call, by its `index`; its arguments as
                           `input_json_delta` pieces)
    message_delta        stop_reason / stop_sequence (ending.py) and the whole usage, input
                         tokens included: the SDK's accumulator takes message_delta's counts
                         over message_start's
    message_stop

Chat's parallel tool calls come one after another; a provider that interleaves their
arguments gets each piece sent to its call's block even if a later block has started (the
SDK's accumulator goes by index). Tool call arguments that are not a JSON object at the end
are the provider's failure: an `error` event takes the place of message_delta, as a whole
answer would be an error (answer.py). Keep-alive comments pass through: SSE clients ignore them.

Cost per chunk: one orjson.loads; a delta event is a block's byte prefix, the piece's JSON
string (orjson.dumps) and a fixed suffix. (Finding the piece in the chunk's bytes instead of
parsing it was measured slower: CPython's bytes.find with a multi-byte needle costs ~0.3 µs a
call, and a chunk needed six; orjson.loads of a whole chunk ~1 µs.)
"""

from __future__ import annotations

from typing import Any

import orjson

from ... import sse
from ...errors import RouterError, UpstreamError, UpstreamProtocolError
from ..endpoint import Answering
from .answer import MESSAGE_ID_PREFIX, TOOL_ID_PREFIX
from .ending import stop_reason, usage
from .errors import stream_event

PING = b'event: ping\ndata: {"type":"ping"}\n\n'
MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_START = b'event: content_block_start\ndata: {"type":"content_block_start","index":%d,"content_block":%b}\n\n'
_STOP = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_DELTA = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"%b","%b":'
)
_DELTA_END = b"}}\n\n"
_TEXT_BLOCK = b'{"type":"text","text":""}'
_THINKING_BLOCK = b'{"type":"thinking","thinking":"","signature":""}'

_TEXT, _THINKING, _TOOL = "text", "thinking", "tool_use"


def _delta_prefix(index: int, kind: str) -> bytes:
    if kind == _TEXT:
        return _DELTA % (index, b"text_delta", b"text")
    if kind == _THINKING:
        return _DELTA % (index, b"thinking_delta", b"thinking")
    return _DELTA % (index, b"input_json_delta", b"partial_json")


class MessageStream:
    """One stream's translation (endpoint.StreamTranslation)."""

    __slots__ = (
        "_answering",
        "_arguments",
        "_blocks",
        "_ended",
        "_finish",
        "_matched",
        "_open",
        "_open_prefix",
        "_refused",
        "_started",
        "_tools",
        "_usage",
        "failure",
    )

    def __init__(self, answering: Answering) -> None:
        self._answering = answering
        self.failure: UpstreamError | None = None
        """What the provider sent that a Messages client cannot be given (a tool call without a
        name, arguments that are no JSON object): the stream has ended with its error event."""
        self._started = False
        self._ended = False
        self._blocks = 0
        """Blocks started so far: the next one's index."""
        self._open: str | None = None
        """The kind of the block open now (the last one started), None when none is."""
        self._open_prefix = b""
        self._tools: dict[int, tuple[int, bytes, str, str]] = {}
        """Chat tool call index -> its block's index, delta prefix, tool name and call id."""
        self._arguments: dict[int, list[str]] = {}
        """Chat tool call index -> the argument pieces sent, checked at the end."""
        self._finish: Any = None
        self._matched: Any = None
        self._refused = False
        self._usage: Any = None

    def events(self, events: list[bytes]) -> bytes:
        out: list[bytes] = []
        for event in events:
            if self._ended:
                break
            if event.startswith(b"data: {") and event.find(b"\n") == len(event) - 2:
                self._chunk(event[6:-2], out)  # a one-line chunk, as most are: no need to look further
                continue
            data = sse.data_of(event)
            if data is None:  # a keep-alive comment
                out.append(event)
            elif sse.is_done(data):
                self._end(out)
            else:
                self._chunk(data, out)
        return b"".join(out)

    def failed(self, error: RouterError) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        return stream_event(error)

    # -- one chunk -------------------------------------------------------------

    def _chunk(self, data: bytes, out: list[bytes]) -> None:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return  # the relay drops malformed events; nothing to translate if one got here
        if not isinstance(chunk, dict):
            return
        if not self._started:
            self._start(chunk, out)
        choices = chunk.get("choices")
        if self._open == _TEXT and type(choices) is list and len(choices) == 1 and chunk.get("usage") is None:
            # Most chunks are one piece of text for the text block already open.
            choice = choices[0]
            delta = choice.get("delta") if type(choice) is dict else None
            if type(delta) is dict and len(delta) == 1 and not choice.get("finish_reason"):
                content = delta.get("content")
                if type(content) is str:
                    if content:
                        out.append(self._open_prefix + orjson.dumps(content) + _DELTA_END)
                    return
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:  # Anthropic has one answer
                self._choice(choice, out)

    def _choice(self, choice: dict[str, Any], out: list[bytes]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict) and delta:
            reasoning = delta.get("reasoning_content")
            if isinstance(reasoning, str) and reasoning:
                self._piece(_THINKING, reasoning, out)
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._piece(_TEXT, content, out)
            refusal = delta.get("refusal")
            if isinstance(refusal, str) and refusal:
                self._refused = True
                self._piece(_TEXT, refusal, out)
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict) and not self._ended:
                        self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            self._finish = finish
            self._matched = choice.get("stop_reason")  # vLLM-style: the stop string matched

    def _piece(self, kind: str, text: str, out: list[bytes]) -> None:
        if self._open != kind:
            self._open_block(kind, _TEXT_BLOCK if kind == _TEXT else _THINKING_BLOCK, out)
        out.append(self._open_prefix + orjson.dumps(text) + _DELTA_END)

    def _tool_call(self, call: dict[str, Any], out: list[bytes]) -> None:
        index = call.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            # No index: a new id starts a new call, anything else continues the last one (as aggregate.py).
            call_id = call.get("id")
            fresh = (
                isinstance(call_id, str)
                and bool(call_id)
                and all(t[3] != call_id for t in self._tools.values())
            )
            index = len(self._tools) if fresh or not self._tools else max(self._tools)
        function = call.get("function")
        function = function if isinstance(function, dict) else {}
        known = self._tools.get(index)
        if known is None:
            name = function.get("name")
            if not isinstance(name, str) or not name:
                self._fail(UpstreamProtocolError("the provider streamed a tool call without a name"), out)
                return
            call_id = call.get("id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"{TOOL_ID_PREFIX}{self._answering.answer_id}_{index}"
            block = orjson.dumps({"type": "tool_use", "id": call_id, "name": name, "input": {}})
            self._open_block(_TOOL, block, out)
            known = self._tools[index] = (self._blocks - 1, self._open_prefix, name, call_id)
            self._arguments[index] = []
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(known[1] + orjson.dumps(arguments) + _DELTA_END)
            self._arguments[index].append(arguments)

    # -- blocks and the message ------------------------------------------------

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        model = chunk.get("model") or self._answering.request.get("model")
        message: dict[str, Any] = {
            "id": MESSAGE_ID_PREFIX + self._answering.answer_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        start = orjson.dumps({"type": "message_start", "message": message})
        out.append(b"event: message_start\ndata: " + start + b"\n\n" + PING)

    def _open_block(self, kind: str, block: bytes, out: list[bytes]) -> None:
        self._close_block(out)
        index = self._blocks
        self._blocks += 1
        self._open = kind
        self._open_prefix = _delta_prefix(index, kind)
        out.append(_START % (index, block))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(_STOP % (self._blocks - 1))
            self._open = None

    def _end(self, out: list[bytes]) -> None:
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        for index, pieces in self._arguments.items():
            if not _is_object("".join(pieces)):
                name = self._tools[index][2]
                error = f"the provider streamed a call of tool {name!r} whose arguments are not a JSON object"
                self._fail(UpstreamProtocolError(error), out)
                return
        reason, sequence = stop_reason(
            self._finish, self._matched, self._answering.request, tool_calls=bool(self._tools)
        )
        if self._refused:
            reason, sequence = "refusal", None
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        body = {"type": "message_delta", "delta": delta, "usage": usage(self._usage)}
        out.append(b"event: message_delta\ndata: " + orjson.dumps(body) + b"\n\n" + MESSAGE_STOP)
        self._ended = True

    def _fail(self, error: UpstreamError, out: list[bytes]) -> None:
        out.append(stream_event(error))
        self._ended = True
        self.failure = error


def _is_object(arguments: str) -> bool:
    """Arguments a client can read as `input`: none at all ({}), or a JSON object."""
    if not arguments.strip():
        return True
    try:
        return isinstance(orjson.loads(arguments), dict)
    except orjson.JSONDecodeError:
        return False
