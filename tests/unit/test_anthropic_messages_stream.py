"""anthropic_messages stream: the relayed chat stream -> Anthropic's event stream.

Each output event is parsed with the SDK's RawMessageStreamEvent and run through the SDK's own
accumulator (the one `client.messages.stream()` uses); one test goes through the SDK client itself.
"""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from router.api.anthropic_messages.stream import MessageStream
from router.api.endpoint import Answering
from router.errors import NoProviderAvailable, UpstreamConnectionLost

EVENT = TypeAdapter(RawMessageStreamEvent)
REQUEST = {
    "model": "claude-x",
    "max_tokens": 100,
    "stream": True,
    "messages": [{"role": "user", "content": "hi"}],
}
DONE = b"data: [DONE]\n\n"


def answering(**request: Any) -> Answering:
    return Answering(request={**REQUEST, **request}, answer_id="feed01", created=1_700_000_000)


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def usage_chunk(prompt: int = 20, completion: int = 9, cached: int | None = None) -> bytes:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-model",
        "choices": [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


def call(index: int, arguments: str = "", id: str | None = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id is not None:
        out |= {"id": id, "type": "function"}
    if name is not None:
        out["function"]["name"] = name
    return out


def translate(*calls: list[bytes], **request: Any) -> bytes:
    """Feed each list of events as one call, as the relay does; the client's bytes."""
    stream = MessageStream(answering(**request))
    return b"".join(stream.events(events) for events in calls)


def parse(output: bytes) -> list[dict[str, Any]]:
    """The SSE events of the output, each `event:` name checked against its data's type."""
    assert output.endswith(b"\n\n")
    events = []
    for raw in output[:-2].split(b"\n\n"):
        if raw.startswith(b":"):
            continue
        name_line, data_line = raw.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        data = orjson.loads(data_line[6:])
        assert data["type"] == name_line[7:].decode()
        events.append(data)
    return events


def final_message(output: bytes) -> Message:
    """What the SDK's accumulator makes of the stream (ping and error events are not for it)."""
    snapshot = None
    for data in parse(output):
        if data["type"] in ("ping", "error"):
            continue
        snapshot = accumulate_event(event=EVENT.validate_python(data), current_snapshot=snapshot)
    assert snapshot is not None
    return Message.model_validate(snapshot.to_dict())


def types(output: bytes) -> list[str]:
    return [e["type"] for e in parse(output)]


TEXT_STREAM = [
    [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"})],
    [chunk({"content": "lo"}), chunk({"content": ', "world"\n'})],
    [chunk({}, finish="stop"), usage_chunk()],
    [DONE],
]


def test_a_text_stream() -> None:
    output = translate(*TEXT_STREAM)
    assert types(output) == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = parse(output)[0]
    assert start["message"]["id"] == "msg_feed01" and start["message"]["model"] == "upstream-model"
    message = final_message(output)
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", 'Hello, "world"\n')]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (20, 9)


def test_the_output_does_not_depend_on_how_events_are_grouped() -> None:
    one_by_one = [[event] for events in TEXT_STREAM for event in events]
    all_at_once = [[event for events in TEXT_STREAM for event in events]]
    assert translate(*TEXT_STREAM) == translate(*one_by_one) == translate(*all_at_once)


def test_every_event_is_an_sdk_event() -> None:
    output = translate(*TEXT_STREAM)
    for data in parse(output):
        if data["type"] != "ping":
            assert EVENT.validate_python(data).type == data["type"]


def test_reasoning_then_text_are_two_blocks() -> None:
    output = translate(
        [chunk({"role": "assistant", "reasoning_content": "Think"}), chunk({"reasoning_content": "ing."})],
        [chunk({"content": "Answer"}), chunk({}, finish="stop"), usage_chunk()],
        [DONE],
    )
    events = parse(output)
    starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    assert starts == [(0, "thinking"), (1, "text")]
    assert [e["index"] for e in events if e["type"] == "content_block_stop"] == [0, 1]
    message = final_message(output)
    assert message.content[0].type == "thinking" and message.content[0].thinking == "Thinking."
    assert message.content[1].type == "text" and message.content[1].text == "Answer"


def test_tool_calls_stream_their_arguments_as_partial_json() -> None:
    output = translate(
        [chunk({"role": "assistant", "content": "Let me check."})],
        [chunk({"tool_calls": [call(0, "", id="call_a", name="get_weather")]})],
        [chunk({"tool_calls": [call(0, '{"city": ')]}), chunk({"tool_calls": [call(0, '"Paris"}')]})],
        [chunk({"tool_calls": [call(1, '{"tz": "CET"}', id="call_b", name="now")]})],
        [chunk({}, finish="tool_calls"), usage_chunk(30, 12)],
        [DONE],
    )
    events = parse(output)
    starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    assert starts == [(0, "text"), (1, "tool_use"), (2, "tool_use")]
    message = final_message(output)
    text, weather, now = message.content
    assert text.type == "text" and text.text == "Let me check."
    assert weather.type == "tool_use" and (weather.id, weather.name, weather.input) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
    )
    assert now.type == "tool_use" and (now.id, now.name, now.input) == ("call_b", "now", {"tz": "CET"})
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (30, 12)


def test_tool_calls_without_an_index_or_id() -> None:
    first = {"function": {"name": "a", "arguments": '{"x":'}}
    output = translate(
        [chunk({"tool_calls": [first]}), chunk({"tool_calls": [{"function": {"arguments": "1}"}}]})],
        [chunk({"tool_calls": [{"id": "call_2", "function": {"name": "b", "arguments": "{}"}}]})],
        [chunk({}, finish="stop"), usage_chunk()],
        [DONE],
    )
    message = final_message(output)
    assert [(b.type, getattr(b, "id", None), getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", "toolu_feed01_0", {"x": 1}),
        ("tool_use", "call_2", {}),
    ]
    assert message.stop_reason == "tool_use"  # tool calls, whatever the finish reason says


def test_interleaved_tool_arguments_reach_their_own_block() -> None:
    output = translate(
        [chunk({"tool_calls": [call(0, '{"a":', id="c0", name="f"), call(1, '{"b":', id="c1", name="g")]})],
        [
            chunk({"tool_calls": [call(0, "1}"), call(1, "2}")]}),
            chunk({}, finish="tool_calls"),
            usage_chunk(),
        ],
        [DONE],
    )
    message = final_message(output)
    assert [getattr(b, "input", None) for b in message.content] == [{"a": 1}, {"b": 2}]


def test_a_matched_stop_sequence() -> None:
    output = translate(
        [chunk({"content": "one"}), chunk({}, finish="stop", stop_reason="END"), usage_chunk()],
        [DONE],
        stop_sequences=["END"],
    )
    message = final_message(output)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_tokens"), ("content_filter", "refusal")])
def test_finish_reasons(finish: str, reason: str) -> None:
    output = translate([chunk({"content": "x"}), chunk({}, finish=finish), usage_chunk()], [DONE])
    assert final_message(output).stop_reason == reason


def test_a_refusal_delta_is_text_and_ends_in_refusal() -> None:
    output = translate([chunk({"refusal": "I can't."}), chunk({}, finish="stop"), usage_chunk()], [DONE])
    message = final_message(output)
    assert message.content[0].type == "text" and message.content[0].text == "I can't."
    assert message.stop_reason == "refusal"


def test_cached_prompt_tokens_are_counted_apart() -> None:
    output = translate(
        [chunk({"content": "x"}), chunk({}, finish="stop"), usage_chunk(100, 3, cached=80)], [DONE]
    )
    usage = final_message(output).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (20, 80, 3)


def test_keep_alive_comments_pass_through() -> None:
    output = translate(
        [chunk({"content": "a"})], [b": keep-alive\n\n"], [chunk({}, finish="stop"), usage_chunk()], [DONE]
    )
    assert b"\n\n: keep-alive\n\n" in output
    assert final_message(output).content[0].type == "text"


def test_an_answer_with_no_content_is_a_message_without_blocks() -> None:
    output = translate([chunk({"role": "assistant"}, finish="stop"), usage_chunk()], [DONE])
    assert types(output) == ["message_start", "ping", "message_delta", "message_stop"]
    assert final_message(output).content == []


def test_nothing_follows_message_stop() -> None:
    stream = MessageStream(answering())
    stream.events([chunk({"content": "a"}), chunk({}, finish="stop"), usage_chunk(), DONE])
    assert stream.events([chunk({"content": "late"})]) == b""
    assert stream.failed(UpstreamConnectionLost("late")) == b""


def test_a_broken_stream_ends_in_an_error_event() -> None:
    stream = MessageStream(answering())
    before = stream.events([chunk({"content": "par"})])
    after = stream.failed(NoProviderAvailable("every provider is down"))
    events = parse(before + after)
    assert events[-1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "every provider is down"},
    }
    assert stream.events([DONE]) == b""


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1]"])
def test_arguments_that_are_not_an_object_end_in_an_error_not_a_message(arguments: str) -> None:
    stream = MessageStream(answering())
    output = stream.events([chunk({"tool_calls": [call(0, id="c", name="get_weather")]})])
    output += stream.events(
        [chunk({"tool_calls": [call(0, arguments)]}), chunk({}, finish="tool_calls"), usage_chunk()]
    )
    output += stream.events([DONE])
    events = parse(output)
    assert events[-1]["type"] == "error" and "get_weather" in events[-1]["error"]["message"]
    assert "message_delta" not in [e["type"] for e in events]


def test_a_tool_call_without_a_name_ends_in_an_error() -> None:
    output = translate([chunk({"tool_calls": [call(0, "{}", id="c")]})], [chunk({"content": "more"})])
    assert types(output)[-1] == "error"
    assert b"more" not in output


def test_the_sdk_client_reads_the_stream() -> None:
    """End to end through anthropic.Anthropic: SSE decoding, event classes, accumulation."""
    output = translate(
        [chunk({"role": "assistant", "reasoning_content": "hmm"}), chunk({"content": "Calling."})],
        [chunk({"tool_calls": [call(0, '{"q": "x"}', id="call_1", name="search")]})],
        [b": keep-alive\n\n"],
        [chunk({}, finish="tool_calls"), usage_chunk(40, 8, cached=10)],
        [DONE],
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=output)
    )
    client = anthropic.Anthropic(
        api_key="k", base_url="http://router.test", http_client=httpx.Client(transport=transport)
    )
    with client.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        texts = list(stream.text_stream)
        message = stream.get_final_message()
    assert texts == ["Calling."]
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].type == "tool_use" and message.content[2].input == {"q": "x"}
    assert message.stop_reason == "tool_use"
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (30, 10, 8)


def test_the_sdk_client_raises_on_an_error_event() -> None:
    stream = MessageStream(answering())
    output = stream.events([chunk({"content": "par"})]) + stream.failed(
        UpstreamConnectionLost("provider reset")
    )
    transport = httpx.MockTransport(
        lambda request: httpx.Response(200, headers={"content-type": "text/event-stream"}, content=output)
    )
    client = anthropic.Anthropic(
        api_key="k", base_url="http://router.test", http_client=httpx.Client(transport=transport)
    )
    messages: Any = [{"role": "user", "content": "hi"}]
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="claude-x", max_tokens=100, messages=messages) as stream,
    ):
        stream.get_final_message()
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "api_error"
