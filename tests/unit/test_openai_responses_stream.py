"""openai_responses.stream: the relayed chat stream -> Responses events.

Every event is parsed with the openai SDK's own event union, and whole streams are read by the
SDK's client (`client.responses.stream`, offline through httpx.MockTransport) as a client would.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseStreamEvent
from pydantic import TypeAdapter

from router.api.endpoint import Answering
from router.api.openai_responses.stream import ResponseStream
from router.errors import RateLimited, UpstreamConnectionLost

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000, "model": "up-model"}
USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 9,
    "total_tokens": 21,
    "prompt_tokens_details": {"cached_tokens": 4},
}
DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


def event(delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any) -> bytes:
    """A chat chunk as the relay hands it on (envelope filled in)."""
    chunk = {**ENVELOPE, "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def usage_event(usage: dict[str, Any] = USAGE) -> bytes:
    return b"data: " + orjson.dumps({**ENVELOPE, "choices": [], "usage": usage}) + b"\n\n"


def call(index: int | None, args: str, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"function": {"arguments": args}}
    if index is not None:
        out["index"] = index
    if id is not None:
        out |= {"id": id, "type": "function"}
        out["function"]["name"] = name
    return out


TEXT = [
    event({"role": "assistant", "content": ""}),
    event({"content": "Hel"}),
    event({"content": "lo, "}),
    KEEP_ALIVE,
    event({"content": "world"}),
    event(finish="stop"),
    usage_event(),
]
REASONING_TEXT_CALLS = [
    event({"role": "assistant", "reasoning_content": "The user "}),
    event({"reasoning_content": "wants weather."}),
    event({"content": "Checking."}),
    event({"tool_calls": [call(0, "", id="call_P", name="weather")]}),
    event({"tool_calls": [call(0, '{"city":')]}),
    event({"tool_calls": [call(0, '"Paris"}')]}),
    event({"tool_calls": [call(1, '{"city":"Rome"}', id="call_R", name="weather")]}),
    event(finish="tool_calls"),
    usage_event(),
]
REQUEST: dict[str, Any] = {"model": "m", "input": "hi", "stream": True}


def answering(**request: Any) -> Answering:
    return Answering(request={**REQUEST, **request}, answer_id="a1b2", created=1700000000)


def translate(batches: Iterable[list[bytes]], **request: Any) -> bytes:
    stream = ResponseStream(answering(**request))
    return b"".join(stream.events(batch) for batch in batches)


def one_by_one(events: list[bytes]) -> list[list[bytes]]:
    return [[e] for e in events] + [[DONE]]


def parsed(raw: bytes) -> list[Any]:
    """Each event parsed by the SDK's union; `event:` names its data's type; comments skipped."""
    out = []
    for block in raw.split(b"\n\n")[:-1]:
        if block.startswith(b":"):
            continue
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        payload = orjson.loads(data[6:])
        assert payload["type"] == name[7:].decode()
        out.append(EVENTS.validate_python(payload))
    assert [e.sequence_number for e in out] == list(range(len(out)))
    return out


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [e for e in events if e.type == kind]


def sdk_stream(raw: bytes, **params: Any) -> tuple[list[Any], Any]:
    """The SDK's stream helper reading `raw`: its events and its final response."""
    client = openai.OpenAI(
        api_key="sk-x", base_url="http://router/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(
            lambda _: httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"}))),
    )  # fmt: skip
    with client.responses.stream(model="m", input="hi", **params) as stream:
        events = list(stream)
        return events, stream.get_final_response()


# -- text -------------------------------------------------------------------------


def test_a_text_stream() -> None:
    raw = translate(one_by_one(TEXT))
    events = parsed(raw)
    assert [e.type for e in events] == [
        "response.created",  # no response.in_progress: it would repeat created's whole object
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created = events[0].response
    assert (created.id, created.status, created.output, created.model) == (
        "resp_a1b2",
        "in_progress",
        [],
        "up-model",
    )
    assert "".join(e.delta for e in of_type(events, "response.output_text.delta")) == "Hello, world"
    [done] = of_type(events, "response.output_text.done")
    assert done.text == "Hello, world" and done.item_id == "msg_a1b2"
    final = events[-1].response
    assert final.status == "completed" and final.output_text == "Hello, world"
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 9
    assert final.usage.input_tokens_details.cached_tokens == 4


def test_keep_alives_pass_through_unchanged() -> None:
    raw = translate(one_by_one(TEXT))
    assert raw.count(KEEP_ALIVE) == 1
    assert b'"delta":"lo, "' in raw.split(KEEP_ALIVE)[0] and b'"delta":"world"' in raw.split(KEEP_ALIVE)[1]


@pytest.mark.parametrize("size", [2, 3, 100])
def test_chunk_boundaries_do_not_change_the_stream(size: int) -> None:
    events = [*REASONING_TEXT_CALLS, DONE]
    batches = [events[i : i + size] for i in range(0, len(events), size)]
    assert translate(batches) == translate(one_by_one(REASONING_TEXT_CALLS))


def test_the_sdk_stream_helper_reads_a_text_stream() -> None:
    events, final = sdk_stream(translate(one_by_one(TEXT)))
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert deltas[-1].snapshot == "Hello, world"  # the SDK's own accumulation
    assert final.output_text == "Hello, world" and final.id == "resp_a1b2"


# -- reasoning and tool calls ---------------------------------------------------------


def test_reasoning_then_text_then_calls() -> None:
    events = parsed(translate(one_by_one(REASONING_TEXT_CALLS)))
    added = [(e.output_index, e.item.type) for e in of_type(events, "response.output_item.added")]
    assert added == [(0, "reasoning"), (1, "message"), (2, "function_call"), (3, "function_call")]
    summary = of_type(events, "response.reasoning_summary_text.delta")
    assert "".join(e.delta for e in summary) == "The user wants weather."
    # a reasoning or message item closes as the next item starts; calls close at the end
    items = [(e.type[21:], e.output_index) for e in events if e.type.startswith("response.output_item.")]
    assert items == [
        ("added", 0), ("done", 0), ("added", 1), ("done", 1),
        ("added", 2), ("added", 3), ("done", 2), ("done", 3),
    ]  # fmt: skip
    arguments: dict[str, str] = {}
    for e in of_type(events, "response.function_call_arguments.delta"):
        arguments[e.item_id] = arguments.get(e.item_id, "") + e.delta
    done = {e.item_id: e.arguments for e in of_type(events, "response.function_call_arguments.done")}
    assert arguments == done == {"fc_a1b2": '{"city":"Paris"}', "fc_a1b2_1": '{"city":"Rome"}'}
    final = events[-1].response
    assert events[-1].type == "response.completed"
    assert [item.type for item in final.output] == ["reasoning", "message", "function_call", "function_call"]
    assert [(item.call_id, item.name) for item in final.output[2:]] == [
        ("call_P", "weather"),
        ("call_R", "weather"),
    ]
    assert final.output[0].summary[0].text == "The user wants weather."


def test_the_sdk_stream_helper_reads_calls() -> None:
    events, final = sdk_stream(translate(one_by_one(REASONING_TEXT_CALLS)))
    snapshots = [e.snapshot for e in events if e.type == "response.function_call_arguments.delta"]
    assert snapshots[-2:] == ['{"city":"Paris"}', '{"city":"Rome"}']
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("call_P", '{"city":"Paris"}'),
        ("call_R", '{"city":"Rome"}'),
    ]


def test_interleaved_parallel_calls_keep_their_own_arguments() -> None:
    chunks = [
        event({"tool_calls": [call(0, '{"a":', id="c0", name="f"), call(1, '{"b":', id="c1", name="g")]}),
        event({"tool_calls": [call(1, "2}")]}),
        event({"tool_calls": [call(0, "1}")]}),
        event(finish="tool_calls"),
        usage_event(),
    ]
    final = parsed(translate(one_by_one(chunks)))[-1].response
    assert [(c.call_id, c.name, c.arguments) for c in final.output] == [
        ("c0", "f", '{"a":1}'),
        ("c1", "g", '{"b":2}'),
    ]


def test_calls_without_an_index_follow_their_ids() -> None:
    chunks = [
        event({"tool_calls": [call(None, '{"a":', id="c0", name="f")]}),
        event({"tool_calls": [call(None, "1}")]}),
        event({"tool_calls": [call(None, "{}", id="c1", name="g")]}),
        event(finish="tool_calls"),
    ]
    final = parsed(translate(one_by_one(chunks)))[-1].response
    assert [(c.call_id, c.arguments) for c in final.output] == [("c0", '{"a":1}'), ("c1", "{}")]


def test_a_call_without_an_id_gets_one_of_routers() -> None:
    chunks = [
        event({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        event(finish="tool_calls"),
    ]
    final = parsed(translate(one_by_one(chunks)))[-1].response
    assert final.output[0].call_id == "call_a1b2_0"


# -- endings --------------------------------------------------------------------------


def test_a_stream_cut_by_the_token_limit_ends_incomplete() -> None:
    chunks = [event({"content": "Once upon"}), event(finish="length"), usage_event()]
    events = parsed(translate(one_by_one(chunks), max_output_tokens=2))
    last = events[-1]
    assert last.type == "response.incomplete"
    assert (
        last.response.status == "incomplete"
        and last.response.incomplete_details.reason == "max_output_tokens"
    )
    assert of_type(events, "response.output_item.done")[0].item.status == "incomplete"


def test_a_refusal_streams_as_a_refusal_part() -> None:
    chunks = [event({"refusal": "I can't"}), event({"refusal": " help."}), event(finish="stop")]
    events = parsed(translate(one_by_one(chunks)))
    assert "".join(e.delta for e in of_type(events, "response.refusal.delta")) == "I can't help."
    assert of_type(events, "response.refusal.done")[0].refusal == "I can't help."
    assert events[-1].response.output[0].content[0].refusal == "I can't help."


def test_logprobs_stream_where_include_asks_for_them() -> None:
    token = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
    chunks = [event({"content": "Hi"}, logprobs={"content": [token]}), event(finish="stop")]
    events = parsed(translate(one_by_one(chunks), include=["message.output_text.logprobs"]))
    [delta] = of_type(events, "response.output_text.delta")
    assert [(lp.token, lp.logprob) for lp in delta.logprobs] == [("Hi", -0.5)]
    assert [lp.token for lp in of_type(events, "response.output_text.done")[0].logprobs] == ["Hi"]
    assert events[-1].response.output[0].content[0].logprobs[0].bytes == [72, 105]


def test_nothing_follows_the_end() -> None:
    stream = ResponseStream(answering())
    stream.events([event({"content": "x"}), event(finish="stop")])
    assert stream.events([DONE])
    assert stream.events([event({"content": "late"})]) == b""
    assert stream.failed(UpstreamConnectionLost("lost")) == b""


# -- failures -------------------------------------------------------------------------


def test_a_broken_stream_ends_failed_with_its_output_so_far() -> None:
    stream = ResponseStream(answering())
    raw = stream.events([event({"content": "Hel"})]) + stream.failed(
        UpstreamConnectionLost("the provider closed")
    )
    events = parsed(raw)
    assert [e.type for e in events[-2:]] == ["response.failed", "error"]
    assert not of_type(events, "response.output_item.done")  # nothing is closed
    failed = events[-2].response
    assert failed.status == "failed" and failed.error.code == "server_error"
    assert failed.error.message == "the provider closed"
    assert failed.output[0].status == "incomplete" and failed.output[0].content[0].text == "Hel"
    error = events[-1]
    assert (error.code, error.message) == ("upstream_error", "the provider closed")


def test_a_rate_limit_reads_as_one() -> None:
    raw = ResponseStream(answering()).failed(RateLimited("slow down"))
    events = parsed(raw)  # response.created comes first even when nothing else did
    assert [e.type for e in events] == [
        "response.created",
        "response.failed",
        "error",
    ]
    assert events[1].response.error.code == "rate_limit_exceeded"


def test_the_sdk_raises_on_a_broken_stream() -> None:
    stream = ResponseStream(answering())
    raw = stream.events([event({"content": "Hel"})]) + stream.failed(
        UpstreamConnectionLost("the provider closed")
    )
    with pytest.raises(openai.APIError, match="the provider closed"):
        sdk_stream(raw)
