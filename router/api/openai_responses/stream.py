"""Pure: the relayed chat stream -> the OpenAI Responses event stream, event by event.

    response.created                              with the first chunk (no response.in_progress:
                                                  it would repeat created's whole object)
    per output item, as its first delta arrives:
      response.output_item.added
        reasoning      reasoning_summary_part.added, reasoning_summary_text.delta ..., .done,
                       reasoning_summary_part.done
        message        content_part.added, output_text.delta ... (or refusal.delta ...),
                       output_text.done (refusal.done), content_part.done
        function_call  function_call_arguments.delta ..., function_call_arguments.done
      response.output_item.done
    response.completed (or response.incomplete)   on `[DONE]`, with the usage chunk's usage

Providers send reasoning, then text, then tool calls: a reasoning or message item closes when
something else starts. Function calls stay open until the answer ends, because a provider may
interleave the deltas of parallel calls and a call closed early would lose its arguments' end.
Reasoning (`reasoning_content`) streams as the reasoning item's summary, as answer.py answers it.

A stream that breaks after its commit point ends with `response.failed` (its output as far as it
got, items not closed) and an `error` event that carries its fields both flat (the documented
ResponseErrorEvent) and nested under `error` (what OpenAI sends, and what makes the openai SDK
raise APIError instead of ending the iteration quietly).

Hot path: each chunk is parsed once; one that is a piece of the open text goes straight to its
delta event, rendered from the part's byte template.
"""

from __future__ import annotations

from typing import Any

import orjson

from ... import sse
from ...errors import RouterError, UpstreamError
from ...types import JSON
from ..endpoint import Answering
from .items import END, Call, Item, Message, Part, Reasoning, Text, at
from .objects import (
    failure,
    finish_status,
    function_call_item,
    item_id,
    message_item,
    output_logprobs,
    reasoning_item,
    response_object,
    summary_part,
    usage_object,
)
from .request import LOGPROBS

_EVENT = b'event: %b\ndata: {"type":"%b","sequence_number":%d,%b\n\n'
_END_NO_LOGPROBS = b',"logprobs":[]}\n\n'


class ResponseStream:
    """One stream's translation (endpoint.StreamTranslation)."""

    __slots__ = (
        "_answering",
        "_calls",
        "_current",
        "_ended",
        "_finish",
        "_logprobs",
        "_model",
        "_output",
        "_plain",
        "_response",
        "_seq",
        "_started",
        "_usage",
        "failure",
    )

    def __init__(self, answering: Answering):
        self._answering = answering
        self.failure: UpstreamError | None = None
        """Never set: every chat stream has a Responses rendering (StreamTranslation.failure)."""
        include = answering.request.get("include")
        self._logprobs = isinstance(include, list) and LOGPROBS in include
        self._seq = 0
        self._started = False
        self._ended = False
        self._model: str = answering.request["model"]
        self._output: list[Item] = []
        self._current: Message | Reasoning | None = None
        """The open message or reasoning item: it closes when anything else starts."""
        self._calls: dict[int, Call] = {}
        """Function calls by their chat index; open until the answer ends."""
        self._finish: Any = None
        self._usage: Any = None
        self._plain: Text | None = None
        """The open output_text's growing text while a chunk that is one more piece of it can go
        straight to its delta event (no logprobs asked for); None otherwise."""
        self._response: JSON = {}
        """The response object as response.created sent it: the end sends it completed."""

    def events(self, events: list[bytes]) -> bytes:
        if self._ended:
            return b""
        out: list[bytes] = []
        for event in events:
            data: bytes | None
            if event.startswith(b"data: {") and event.find(b"\n") == len(event) - 2:
                data = event[6:-2]  # a one-line chunk, as most are: no need to look further
            else:
                data = sse.data_of(event)
            if data is None:
                out.append(event)  # a keep-alive: the client's idle timer wants it too
                continue
            if data[:1] != b"{" and sse.is_done(data):  # (a chunk is never `[DONE]`)
                self._end(out)
                break
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue  # (the relay forwards none: it drops malformed events)
            if type(chunk) is not dict:
                continue
            plain = self._plain
            if plain is not None:  # most chunks: one more piece of the open output text
                choices = chunk.get("choices")
                if type(choices) is list and len(choices) == 1 and chunk.get("usage") is None:
                    choice = choices[0]
                    delta = choice.get("delta") if type(choice) is dict else None
                    if type(delta) is dict and len(delta) == 1 and not choice.get("finish_reason"):
                        content = delta.get("content")
                        if type(content) is str:
                            if content:
                                out.append(plain.delta(self._seq, content, _END_NO_LOGPROBS))
                                self._seq += 1
                            continue
            if not self._started:
                self._start(chunk, out)
            self._chunk(chunk, out)
        return b"".join(out)

    def failed(self, error: RouterError) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        out: list[bytes] = []
        if not self._started:
            self._start({}, out)
        response = response_object(
            self._answering,
            model=self._model,
            status="failed",
            output=[item.result("incomplete") for item in self._output],
            usage=usage_object(self._usage),
            error=failure(error),
        )
        self._emit(out, b"response.failed", {"response": response})
        nested = error.payload()["error"]
        self._emit(
            out,
            b"error",
            {"code": error.error_code, "message": error.message, "param": error.param, "error": nested},
        )
        return b"".join(out)

    # -- the chat stream ---------------------------------------------------------

    def _start(self, chunk: JSON, out: list[bytes]) -> None:
        self._started = True
        model = chunk.get("model")
        if isinstance(model, str) and model:
            self._model = model  # the relay's envelope: the model that answers
        self._response = response_object(self._answering, model=self._model, status="in_progress", output=[])
        response = orjson.dumps(self._response)
        # Only response.created: response.in_progress would repeat the same whole object (as
        # many bytes as the answer's text, again) and tells a client nothing created did not.
        self._put(out, b"response.created", b'"response":' + response + b"}")

    def _chunk(self, chunk: JSON, out: list[bytes]) -> None:
        usage = chunk.get("usage")
        if type(usage) is dict:
            self._usage = usage
        choices = chunk.get("choices")
        if type(choices) is not list or not choices or type(choices[0]) is not dict:
            return
        choice = choices[0]  # router asks for one choice: Responses has no `n`
        delta = choice.get("delta")
        if type(delta) is dict and delta:
            reasoning = delta.get("reasoning_content")
            if type(reasoning) is str and reasoning:
                self._reasoning(reasoning, out)
            content = delta.get("content")
            if type(content) is str and content:
                self._text("output_text", content, choice, out)
            refusal = delta.get("refusal")
            if type(refusal) is str and refusal:
                self._text("refusal", refusal, choice, out)
            calls = delta.get("tool_calls")
            if type(calls) is list:
                for call in calls:
                    if type(call) is dict:
                        self._tool_call(call, out)
        finish = choice.get("finish_reason")
        if finish:
            self._finish = finish

    def _text(self, kind: str, piece: str, choice: JSON, out: list[bytes]) -> None:
        message = self._current
        if type(message) is not Message:
            message = self._open_message(out)
        part = message.parts[-1] if message.parts else None
        if part is None or part.kind != kind:
            part = self._open_part(message, kind, out)
        end = END
        if kind == "output_text":
            end = _END_NO_LOGPROBS
            if self._logprobs:
                logprobs = choice.get("logprobs")
                tokens = output_logprobs(logprobs.get("content") if type(logprobs) is dict else None)
                part.logprobs.extend(tokens)
                end = b',"logprobs":' + orjson.dumps(tokens) + END
        out.append(part.text.delta(self._seq, piece, end))
        self._seq += 1
        if kind == "output_text" and not self._logprobs:
            self._plain = part.text

    def _reasoning(self, piece: str, out: list[bytes]) -> None:
        item = self._current
        if type(item) is not Reasoning:
            item = self._open_reasoning(out)
        out.append(item.text.delta(self._seq, piece))
        self._seq += 1

    def _tool_call(self, call: JSON, out: list[bytes]) -> None:
        index = self._call_index(call)
        function = call.get("function")
        function = function if type(function) is dict else {}
        name = function.get("name")
        item = self._calls.get(index)
        if item is None:
            item = self._open_call(index, call.get("id"), name if isinstance(name, str) else "", out)
        elif not item.name and isinstance(name, str):
            item.name = name
        arguments = function.get("arguments")
        if type(arguments) is str and arguments:
            out.append(item.arguments.delta(self._seq, arguments))
            self._seq += 1

    def _call_index(self, call: JSON) -> int:
        """OpenAI indexes each call's deltas; without an index, a new id starts a new call and
        anything else continues the last one (as aggregate.py reads them)."""
        index = call.get("index")
        if type(index) is int:
            return index
        if not self._calls:
            return 0
        new_id = call.get("id")
        if isinstance(new_id, str) and new_id and all(c.call_id != new_id for c in self._calls.values()):
            return max(self._calls) + 1
        return next(reversed(self._calls))

    def _end(self, out: list[bytes]) -> None:
        self._ended = True
        status, incomplete = finish_status(self._finish)
        items_status = "completed" if status == "completed" else "incomplete"
        self._close_current(out, items_status)
        for call in self._calls.values():
            self._close_call(call, items_status, out)
        response = {
            **self._response,  # created's, with how it ended
            "status": status,
            "output": [item.result(items_status) for item in self._output],
            "usage": usage_object(self._usage),
            "incomplete_details": incomplete,
        }
        event = b"response.completed" if status == "completed" else b"response.incomplete"
        self._emit(out, event, {"response": response})

    # -- items -------------------------------------------------------------------

    def _open_message(self, out: list[bytes]) -> Message:
        self._close_current(out, "completed")
        n = sum(type(item) is Message for item in self._output)
        message = Message(item_id("msg", self._answering.answer_id, n), len(self._output))
        self._added(message, message_item(message.id, [], "in_progress"), out)
        self._current = message
        return message

    def _open_part(self, message: Message, kind: str, out: list[bytes]) -> Part:
        self._plain = None
        if message.parts:
            self._close_part(message, message.parts[-1], out)
        where = at(message.id, message.index, content_index=len(message.parts))
        event = b"response.output_text.delta" if kind == "output_text" else b"response.refusal.delta"
        part = Part(kind, Text(event, where))
        message.parts.append(part)
        self._emit(out, b"response.content_part.added", {**where, "part": part.result()})
        return part

    def _close_part(self, message: Message, part: Part, out: list[bytes]) -> None:
        if part.done:
            return
        part.done = True
        where = at(message.id, message.index, content_index=message.parts.index(part))
        result = part.result()
        if part.kind == "output_text":
            done = {**where, "text": result["text"], "logprobs": result["logprobs"]}
            self._emit(out, b"response.output_text.done", done)
        else:
            self._emit(out, b"response.refusal.done", {**where, "refusal": result["refusal"]})
        self._emit(out, b"response.content_part.done", {**where, "part": result})

    def _open_reasoning(self, out: list[bytes]) -> Reasoning:
        self._close_current(out, "completed")
        n = sum(type(item) is Reasoning for item in self._output)
        item = Reasoning(item_id("rs", self._answering.answer_id, n), len(self._output))
        self._added(item, reasoning_item(item.id, None, "in_progress"), out)
        where = at(item.id, item.index, summary_index=0)
        self._emit(out, b"response.reasoning_summary_part.added", {**where, "part": summary_part("")})
        self._current = item
        return item

    def _open_call(self, index: int, upstream_id: Any, name: str, out: list[bytes]) -> Call:
        self._close_current(out, "completed")
        n = len(self._calls)
        answer_id = self._answering.answer_id
        # A provider that names no call gets an id of router's: the client answers with it.
        call_id = upstream_id if isinstance(upstream_id, str) and upstream_id else f"call_{answer_id}_{n}"
        call = Call(item_id("fc", answer_id, n), len(self._output), call_id, name)
        self._calls[index] = call
        self._added(call, function_call_item(call.id, call_id, name, "", "in_progress"), out)
        return call

    def _added(self, item: Item, snapshot: JSON, out: list[bytes]) -> None:
        self._output.append(item)
        self._emit(out, b"response.output_item.added", {"output_index": item.index, "item": snapshot})

    def _close_current(self, out: list[bytes], status: str) -> None:
        item, self._current, self._plain = self._current, None, None
        if type(item) is Message:
            if item.parts:
                self._close_part(item, item.parts[-1], out)
            self._done(item, item.result(status), out)
        elif type(item) is Reasoning:
            text = item.text.joined()
            where = at(item.id, item.index, summary_index=0)
            self._emit(out, b"response.reasoning_summary_text.done", {**where, "text": text})
            self._emit(out, b"response.reasoning_summary_part.done", {**where, "part": summary_part(text)})
            self._done(item, reasoning_item(item.id, text, status), out)

    def _close_call(self, call: Call, status: str, out: list[bytes]) -> None:
        arguments = call.arguments.joined()
        done = {**at(call.id, call.index), "arguments": arguments}
        self._emit(out, b"response.function_call_arguments.done", done)
        self._done(call, function_call_item(call.id, call.call_id, call.name, arguments, status), out)

    def _done(self, item: Item, final: JSON, out: list[bytes]) -> None:
        item.final = final
        self._emit(out, b"response.output_item.done", {"output_index": item.index, "item": final})

    # -- events --------------------------------------------------------------------

    def _emit(self, out: list[bytes], event: bytes, fields: JSON) -> None:
        self._put(out, event, orjson.dumps(fields)[1:])

    def _put(self, out: list[bytes], event: bytes, rest: bytes) -> None:
        """`rest`: the event's other fields, `"name":value,...}` (its JSON without the `{`)."""
        out.append(_EVENT % (event, event, self._seq, rest))
        self._seq += 1
