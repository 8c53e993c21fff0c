"""aggregate: a stream's chunks, as the relay emits them, -> one chat.completion. Pure, no I/O."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.aggregate import CompletionAggregate

ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def chunk(*choices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {**ENVELOPE, "choices": list(choices), **extra}


def delta(index: int = 0, finish: str | None = None, logprobs: Any = None, **fields: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "delta": fields, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return choice


def call(index: int, *, args: str, id: str | None = None, name: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if id is not None:
        out |= {"id": id, "type": "function"}
        out["function"]["name"] = name
    return out


def token(text: str) -> dict[str, Any]:
    return {"token": text, "logprob": -0.5, "bytes": list(text.encode()), "top_logprobs": []}


def aggregate(*chunks: dict[str, Any]) -> dict[str, Any]:
    whole = CompletionAggregate()
    for c in chunks:
        whole.feed_chunk(c)
    return whole.result()


def message(role: str = "assistant", content: Any = None, refusal: Any = None, **more: Any) -> dict[str, Any]:
    return {"role": role, "content": content, "refusal": refusal, **more}


USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
TEXT = [
    chunk(delta(role="assistant", content="")),
    chunk(delta(content="Hello")),
    chunk(delta(content=" world")),
    chunk(delta(finish="stop")),
]

CASES: list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]] = [
    (
        "content joined, last finish reason",
        TEXT,
        [{"index": 0, "message": message(content="Hello world"), "logprobs": None, "finish_reason": "stop"}],
    ),
    (
        "several tool calls interleaved, arguments joined by index",
        [
            chunk(delta(role="assistant", content="")),
            chunk(delta(tool_calls=[call(0, id="c0", name="f", args="")])),
            chunk(delta(tool_calls=[call(1, id="c1", name="g", args='{"b"')])),
            chunk(delta(tool_calls=[call(0, args='{"a":')])),
            chunk(delta(tool_calls=[call(1, args=":2}"), call(0, args="1}")])),
            chunk(delta(finish="tool_calls")),
        ],
        [
            {
                "index": 0,
                "message": message(
                    tool_calls=[
                        {"id": "c0", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
                        {"id": "c1", "type": "function", "function": {"name": "g", "arguments": '{"b":2}'}},
                    ]
                ),
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
    ),
    (
        "n=2 interleaved, each choice by its index, sorted",
        [
            chunk(delta(1, content="B")),
            chunk(delta(0, role="assistant", content="A")),
            chunk(delta(1, content="b", finish="length")),
            chunk(delta(0, content="a")),
            chunk(delta(0, finish="stop")),
        ],
        [
            {"index": 0, "message": message(content="Aa"), "logprobs": None, "finish_reason": "stop"},
            {"index": 1, "message": message(content="Bb"), "logprobs": None, "finish_reason": "length"},
        ],
    ),
    (
        "logprobs: each chunk's tokens, concatenated in order",
        [
            chunk(delta(content="Hi", logprobs={"content": [token("Hi")], "refusal": None})),
            chunk(delta(content=" there", logprobs={"content": [token(" there")], "refusal": None})),
            chunk(delta(finish="stop")),
        ],
        [
            {
                "index": 0,
                "message": message(content="Hi there"),
                "logprobs": {"content": [token("Hi"), token(" there")], "refusal": None},
                "finish_reason": "stop",
            }
        ],
    ),
    (
        "refusal and its logprobs: content null",
        [
            chunk(delta(role="assistant", content="")),
            chunk(delta(refusal="I can't", logprobs={"content": None, "refusal": [token("I can't")]})),
            chunk(delta(refusal=" help.", logprobs={"content": None, "refusal": [token(" help.")]})),
            chunk(delta(finish="stop")),
        ],
        [
            {
                "index": 0,
                "message": message(refusal="I can't help."),
                "logprobs": {"content": None, "refusal": [token("I can't"), token(" help.")]},
                "finish_reason": "stop",
            }
        ],
    ),
    (
        "reasoning_content joined, before the content",
        [
            chunk(delta(role="assistant", reasoning_content="Think")),
            chunk(delta(reasoning_content="ing.", content=None)),
            chunk(delta(content="Done.", reasoning_content=None)),
            chunk(delta(finish="stop")),
        ],
        [
            {
                "index": 0,
                "message": message(content="Done.", reasoning_content="Thinking."),
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    ),
    (
        "a tool call with logprobs asked: content null, as the non-stream answer",
        [
            chunk(delta(tool_calls=[call(0, id="c", name="f", args="{}")], logprobs={"content": None})),
            chunk(delta(finish="tool_calls", logprobs={"content": None, "refusal": None})),
        ],
        [
            {
                "index": 0,
                "message": message(
                    tool_calls=[{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
                ),
                "logprobs": {"content": None, "refusal": None},
                "finish_reason": "tool_calls",
            }
        ],
    ),
    (
        "an empty answer: content '' (it was sent), not null",
        [chunk(delta(role="assistant", content="")), chunk(delta(finish="stop"))],
        [{"index": 0, "message": message(content=""), "logprobs": None, "finish_reason": "stop"}],
    ),
]


@pytest.mark.parametrize(("chunks", "choices"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choices(chunks: list[dict[str, Any]], choices: list[dict[str, Any]]) -> None:
    answer = aggregate(*chunks)
    assert answer["choices"] == choices
    assert {k: answer[k] for k in ("id", "object", "created", "model")} == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 7,
        "model": "m",
    }


def test_usage_from_the_usage_chunk_passed_through_whole() -> None:
    detailed = {**USAGE, "prompt_tokens_details": {"cached_tokens": 2}, "completion_tokens_details": {"x": 1}}
    answer = aggregate(*TEXT, chunk(usage=detailed))
    assert answer["usage"] == detailed
    assert len(answer["choices"]) == 1  # the usage chunk's `choices: []` adds none


def test_usage_riding_on_a_content_chunk() -> None:
    answer = aggregate(*TEXT[:-1], chunk(delta(finish="stop"), usage=USAGE))
    assert answer["usage"] == USAGE
    assert answer["choices"][0]["finish_reason"] == "stop"


def test_usage_on_every_chunk_the_last_is_the_total() -> None:
    early = {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}
    assert (
        aggregate(chunk(delta(content="a"), usage=early), chunk(delta(finish="stop"), usage=USAGE))["usage"]
        == USAGE
    )


def test_no_usage_no_key() -> None:
    assert "usage" not in aggregate(*TEXT)  # envelope.complete() fills router's estimate


def test_system_fingerprint_and_service_tier_pass_through_unknown_fields_do_not() -> None:
    first = chunk(delta(content="x"), system_fingerprint="fp_1", service_tier="default", obfuscation="zz")
    answer = aggregate(first, chunk(delta(finish="stop"), system_fingerprint="fp_1"))
    assert answer["system_fingerprint"] == "fp_1" and answer["service_tier"] == "default"
    assert "obfuscation" not in answer
    assert "system_fingerprint" not in aggregate(*TEXT)


def test_finish_reason_is_the_last_non_null_one() -> None:
    answer = aggregate(
        chunk(delta(content="x", finish="")),  # "" is some gateways' "not yet"
        chunk(delta(finish="length")),
        chunk(delta(finish=None)),
    )
    assert answer["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"choices": None},
        {"choices": "x"},
        {"choices": [None, 3, "x"]},
        {"choices": [{"index": "1", "delta": {"content": "?"}}]},  # a bad index: choice 0
        {"choices": [{"index": 0, "delta": None, "logprobs": "x", "finish_reason": 5}]},
        {"choices": [{"index": 0, "delta": {"content": None, "role": None, "tool_calls": None}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [None, {"index": 0, "function": None}]}}]},
        {"choices": [{"delta": {"content": 3, "refusal": [], "reasoning_content": {}}}]},
        {"usage": None, "model": None, "weird": {"nested": True}},
    ],
)
def test_odd_chunks_never_raise_and_add_only_what_they_carry(odd: dict[str, Any]) -> None:
    answer = aggregate(
        chunk(delta(role="assistant", content="a")), odd, chunk(delta(content="b", finish="stop"))
    )
    first = answer["choices"][0]
    assert first["finish_reason"] == "stop" and first["message"]["content"] in ("ab", "a?b")
    assert answer["model"] == "m" and "usage" not in answer


def test_tool_calls_without_index_told_apart_by_id() -> None:
    answer = aggregate(
        chunk(delta(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": '{"x"'}}])),
        chunk(delta(tool_calls=[{"function": {"arguments": ":1}"}}])),
        chunk(delta(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{}"}}])),
    )
    calls = answer["choices"][0]["message"]["tool_calls"]
    assert [(c["id"], c["type"], c["function"]) for c in calls] == [
        ("a", "function", {"name": "f", "arguments": '{"x":1}'}),
        ("b", "function", {"name": "g", "arguments": "{}"}),
    ]


def test_feed_event_takes_sse_data_and_skips_done_and_garbage() -> None:
    whole = CompletionAggregate()
    for data in [orjson.dumps(c) for c in TEXT] + [b"{not json", b"[1,2]", b"[DONE]"]:
        whole.feed_event(data)
    whole.feed_chunk([1, 2])  # type: ignore[arg-type]  # a caller's loads() of an odd event
    assert whole.result() == aggregate(*TEXT)


def test_a_pure_function_of_the_chunks_result_does_not_change_after_more() -> None:
    whole = CompletionAggregate()
    lp = {"content": [token("a")], "refusal": None}
    whole.feed_chunk(chunk(delta(content="a", logprobs=lp)))
    before = whole.result()
    snapshot = orjson.dumps(before)
    whole.feed_chunk(chunk(delta(content="b", logprobs={"content": [token("b")]})))
    assert orjson.dumps(before) == snapshot
    assert whole.result()["choices"][0]["logprobs"]["content"] == [token("a"), token("b")]
    assert lp == {"content": [token("a")], "refusal": None}  # the chunk fed is not changed either


def test_no_chunks_no_choices() -> None:
    assert aggregate() == {
        "id": None,
        "object": "chat.completion",
        "created": None,
        "model": None,
        "choices": [],
    }
