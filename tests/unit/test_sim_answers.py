from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from pydantic import BaseModel, Field

from router.sim import wire
from router.sim.answers import answer
from router.sim.dialects import DIALECTS


@pytest.mark.parametrize("chunks", [1, 8, 34, 200, 500])
def test_a_stream_has_as_many_content_chunks_as_asked(chunks: int) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    made = answer(DIALECTS["trinity"], body, chunks=chunks, call_id="call_1")
    assert len(made.pieces) == chunks
    assert made.usage["completion_tokens"] == max(chunks, 8)


# -- helpers: one request, answered both ways ------------------------------------------------

HELLO = [{"role": "user", "content": "hi"}]


def both(
    dialect: str, body: dict[str, Any], *, chunks: int = 8
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The non-stream answer and the stream's chunks (without [DONE]) for the same request."""
    made = answer(DIALECTS[dialect], body, chunks=chunks, call_id="call_1")
    plain = orjson.loads(wire.completion(DIALECTS[dialect], body, made, completion_id="c", created=1))
    plan = wire.stream(DIALECTS[dialect], {**body, "stream": True}, made, completion_id="c", created=1)
    events = [orjson.loads(e.removeprefix(b"data: ")) for e in plan.head + plan.content + plan.tail[:-1]]
    assert plan.tail[-1] == b"data: [DONE]\n\n"
    return plain, events


def streamed(events: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"] if c["index"] == index
    )


# -- structured output ----------------------------------------------------------------------


class Step(BaseModel):
    explanation: str
    output: str


class Reasoning(BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: float = Field(ge=0, le=1)


@pytest.mark.parametrize("dialect", ["trinity", "real200"])
@pytest.mark.parametrize("chunks", [1, 8, 50])
def test_json_schema_answers_validate_and_stream_the_same_text(dialect: str, chunks: int) -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": Reasoning.model_json_schema(), "strict": True},
    }
    plain, events = both(
        dialect, {"model": "gpt-4o", "messages": HELLO, "response_format": fmt}, chunks=chunks
    )
    content = plain["choices"][0]["message"]["content"]
    parsed = Reasoning.model_validate_json(content)
    assert f"{dialect} (gpt-4o)" in parsed.final_answer
    assert streamed(events) == content
    assert len([e for e in events if e["choices"] and "content" in e["choices"][0]["delta"]]) - 1 == chunks


def test_json_object_answers_are_an_object() -> None:
    fmt = {"type": "json_object"}
    plain, events = both("real200", {"model": "gpt-4o", "messages": HELLO, "response_format": fmt})
    content = plain["choices"][0]["message"]["content"]
    assert orjson.loads(content) == {"answer": "This is a simulated answer from real200 (gpt-4o)."}
    assert streamed(events) == content


# -- tool calls -----------------------------------------------------------------------------

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "when": {"type": "string", "format": "date"},
    },
    "required": ["city", "unit", "days", "when"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
]


def call_of(plain: dict[str, Any]) -> dict[str, Any]:
    choice = plain["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call: dict[str, Any] = choice["message"]["tool_calls"][0]
    return call


def test_tool_arguments_fit_the_chosen_tools_parameters() -> None:
    named = {"type": "function", "function": {"name": "weather"}}
    body = {"model": "gpt-4o", "messages": HELLO, "tools": TOOLS, "tool_choice": named}
    plain, events = both("real200", body)
    call = call_of(plain)
    assert call["function"]["name"] == "weather"
    arguments = orjson.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER)
    assert set(arguments) == set(WEATHER["properties"])
    pieces = [
        t["function"]["arguments"]
        for e in events
        for c in e["choices"]
        for t in c["delta"].get("tool_calls", [])
    ]
    assert "".join(pieces) == call["function"]["arguments"]


def test_without_a_named_tool_the_first_is_called() -> None:
    plain, _ = both("trinity", {"model": "gpt-4o", "messages": HELLO, "tools": TOOLS})
    call = call_of(plain)
    assert call["function"]["name"] == "lookup"
    assert orjson.loads(call["function"]["arguments"]) == {"query": "simulated"}


def test_tool_choice_required_forces_a_call_after_a_tool_turn_and_none_prevents_one() -> None:
    turns = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c", "content": "42"},
    ]
    body = {"model": "gpt-4o", "messages": turns, "tools": TOOLS}
    assert both("real200", body)[0]["choices"][0]["finish_reason"] == "stop"
    assert call_of(both("real200", {**body, "tool_choice": "required"})[0])["function"]["name"] == "lookup"
    none = both("real200", {**body, "messages": HELLO, "tool_choice": "none"})[0]["choices"][0]
    assert none["finish_reason"] == "stop" and "tool_calls" not in none["message"]


# -- stop -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stop", "chunks", "expected"),
    [
        (["answer"], 8, "This is a simulated "),
        ("answer", 8, "This is a simulated "),
        (["(gpt", "simulated", "x"], 8, "This is a "),
        ([" delta"], 30, "This is a simulated answer from trinity (gpt-4o). alpha bravo charlie"),
    ],
)
def test_stop_cuts_before_the_first_stop_sequence(stop: Any, chunks: int, expected: str) -> None:
    body = {"model": "gpt-4o", "messages": HELLO, "stop": stop}
    plain, events = both("trinity", body, chunks=chunks)
    choice = plain["choices"][0]
    assert choice["message"]["content"] == expected
    assert choice["finish_reason"] == "stop"
    assert streamed(events) == expected
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert plain["usage"]["completion_tokens"] == len(expected.split())


def test_a_stop_sequence_that_never_occurs_changes_nothing() -> None:
    plain, _ = both("trinity", {"model": "gpt-4o", "messages": HELLO, "stop": ["zebra"]})
    assert plain["choices"][0]["message"]["content"] == "This is a simulated answer from trinity (gpt-4o)."


# -- logprobs -------------------------------------------------------------------------------


def check_entries(entries: list[dict[str, Any]], top: int) -> None:
    for entry in entries:
        assert entry["logprob"] < 0 and entry["bytes"] == list(entry["token"].encode())
        ranked = entry["top_logprobs"]
        assert len(ranked) == top
        if top:
            assert ranked[0]["token"] == entry["token"] and ranked[0]["logprob"] == entry["logprob"]
            assert [r["logprob"] for r in ranked] == sorted((r["logprob"] for r in ranked), reverse=True)
            assert len({r["token"] for r in ranked}) == top


@pytest.mark.parametrize("top", [None, 0, 3, 20])
def test_logprobs_describe_every_returned_token(top: int | None) -> None:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": HELLO, "logprobs": True, "stop": "from"}
    if top is not None:
        body["top_logprobs"] = top
    plain, events = both("trinity", body, chunks=3)
    choice = plain["choices"][0]
    logprobs = choice["logprobs"]
    assert logprobs["refusal"] is None
    entries = logprobs["content"]
    assert (
        "".join(e["token"] for e in entries) == choice["message"]["content"] == "This is a simulated answer "
    )
    assert len(entries) == plain["usage"]["completion_tokens"] == 5
    check_entries(entries, top or 0)
    # each chunk carries its own tokens' logprobs; together they are the non-stream ones
    in_chunks = []
    for event in events:
        for c in event["choices"]:
            if c["delta"].get("content"):
                own = c["logprobs"]["content"]
                assert "".join(e["token"] for e in own) == c["delta"]["content"]
                in_chunks += own
    assert in_chunks == entries
    again, _ = both("trinity", body, chunks=3)
    assert again["choices"][0]["logprobs"] == logprobs  # deterministic


def test_without_logprobs_choices_say_null_and_chunks_say_nothing() -> None:
    plain, events = both("trinity", {"model": "gpt-4o", "messages": HELLO})
    assert plain["choices"][0]["logprobs"] is None
    assert not any("logprobs" in c for e in events for c in e["choices"])


# -- n ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{}, {"stop": ["answer"]}, {"max_tokens": 2}])
def test_n_choices_are_distinct_in_both_shapes(extra: dict[str, Any]) -> None:
    body = {"model": "gpt-4o", "messages": HELLO, "n": 3, **extra}
    plain, events = both("real200", body)
    contents = [c["message"]["content"] for c in plain["choices"]]
    assert [c["index"] for c in plain["choices"]] == [0, 1, 2]
    assert len(set(contents)) == 3
    if not extra:  # choice i is i tokens longer, so streamed choices finish one after another
        assert contents[1].endswith(" more") and contents[2].endswith(" more more")
    assert [streamed(events, i) for i in range(3)] == contents
    finishes = [c["index"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert sorted(finishes) == [0, 1, 2]
    assert plain["usage"]["completion_tokens"] == sum(len(c.split()) for c in contents)


def test_n_choices_with_logprobs_each_describe_their_own_tokens() -> None:
    body = {"model": "gpt-4o", "messages": HELLO, "n": 2, "logprobs": True, "top_logprobs": 1}
    plain, _ = both("trinity", body)  # answer() itself does not refuse; checks.py does
    for choice in plain["choices"]:
        tokens = "".join(e["token"] for e in choice["logprobs"]["content"])
        assert tokens == choice["message"]["content"]


# -- usage details ----------------------------------------------------------------------------


def test_trinity_reports_cached_and_reasoning_tokens() -> None:
    first = both("trinity", {"model": "gpt-4o", "messages": HELLO})[0]["usage"]
    assert first["prompt_tokens_details"] == {"cached_tokens": 0}
    assert first["completion_tokens_details"] == {"reasoning_tokens": 0}
    longer = [{"role": "system", "content": "be brief"}, *HELLO]
    cached = both("trinity", {"model": "gpt-4o", "messages": longer})[0]["usage"]
    assert 0 < cached["prompt_tokens_details"]["cached_tokens"] < cached["prompt_tokens"]
    model = "doubao-seed-1-6-thinking-agent-preview"
    for extra in ({"thinking_enabled": True}, {"reasoning_effort": "low"}):
        plain, events = both(
            "trinity", {"model": model, "messages": HELLO, **extra, "stream_options": {"include_usage": True}}
        )
        usage = plain["usage"]
        reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
        assert reasoning > 0 and usage["completion_tokens"] == 8 + reasoning
        assert events[-1]["choices"] == [] and events[-1]["usage"] == usage
    effortless = both("trinity", {"model": model, "messages": HELLO, "reasoning_effort": "none"})[0]
    assert effortless["usage"]["completion_tokens_details"] == {"reasoning_tokens": 0}


@pytest.mark.parametrize("dialect", ["chenyu", "real200"])
def test_other_dialects_usage_stays_plain(dialect: str) -> None:
    model = next(iter(DIALECTS[dialect].models))
    usage = both(dialect, {"model": model, "messages": HELLO})[0]["usage"]
    assert set(usage) == {"prompt_tokens", "completion_tokens", "total_tokens"}
