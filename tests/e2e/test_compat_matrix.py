"""One OpenAI answer whichever provider serves it: the compatibility matrix of the demo.

Every model of the shipped providers.yaml, once per provider that serves it (each provider
pinned by a config that holds only it, in front of a simulator of its dialect), x stream and
not, x each feature a client uses: a plain answer, usage, a two-turn tool loop, parse() with
a pydantic model, logprobs, stop — all through the official openai SDK. Where the provider's
document says it takes the feature, the answer must have it; where not, router refuses the
request up front with the parameter named. Either way the envelope and usage rules are the
same for every provider.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pydantic
import pytest

from router import ledger
from tests.e2e.conftest import SHIPPED, Pinned

# In config order (not a set's): every pytest-xdist worker must collect the same ids.
PAIRS = [
    (provider, model)
    for model, targets in SHIPPED.targets.items()
    if targets[0].route.kind == "chat"  # the demo's example embedding and rerank models have their own tests
    for provider in dict.fromkeys(t.provider.name for t in targets)
]
HELLO: Any = [{"role": "user", "content": "Hello!"}]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "the weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


class Step(pydantic.BaseModel):
    explanation: str
    output: str


class MathReasoning(pydantic.BaseModel):
    steps: list[Step]
    final_answer: str
    confidence: float | None = None


# -- the envelope and usage rules, the same for every provider ---------------------------------


def check_answer(answer: Any, model: str) -> None:
    """A whole answer: the OpenAI envelope, and usage that adds up."""
    assert answer.id and answer.object == "chat.completion"
    assert isinstance(answer.created, int) and answer.created > 0
    assert isinstance(answer.model, str) and answer.model
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def check_stream(chunks: list[Any], *, usage: bool) -> None:
    """A stream: one id, the envelope on every chunk, and a usage chunk last exactly when asked."""
    assert len({c.id for c in chunks}) == 1 and chunks[0].id
    for c in chunks:
        assert c.object == "chat.completion.chunk"
        assert isinstance(c.created, int) and c.created > 0
        assert isinstance(c.model, str) and c.model
    with_usage = [c for c in chunks if c.usage is not None]
    if usage:
        last = chunks[-1]
        assert with_usage == [last] and last.choices == []
        assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
        assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
        assert all(c.choices for c in chunks[:-1])
    else:
        assert with_usage == [] and all(c.choices for c in chunks)


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def finish_of(chunks: list[Any]) -> str | None:
    return next(
        (c.choices[0].finish_reason for c in reversed(chunks) if c.choices and c.choices[0].finish_reason),
        None,
    )


def refused(error: openai.BadRequestError, param: str) -> None:
    assert error.status_code == 400
    assert error.body["param"] == param  # type: ignore[index]
    assert error.response.headers.get("x-router-attempts") is None  # nothing went upstream


# -- the matrix --------------------------------------------------------------------------------

STREAM = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
PAIR = pytest.mark.parametrize(("provider", "model"), PAIRS, ids=[f"{p}-{m}" for p, m in PAIRS])


@PAIR
@STREAM
def test_plain(pinned: dict[str, Pinned], provider: str, model: str, stream: bool) -> None:
    p = pinned[provider]
    sdk = p.sdk()
    if not stream:
        answer = sdk.chat.completions.create(model=model, messages=HELLO)
        check_answer(answer, model)
        assert answer.choices[0].message.content and answer.choices[0].finish_reason == "stop"
        return
    chunks = list(sdk.chat.completions.create(model=model, messages=HELLO, stream=True))
    check_stream(chunks, usage=False)
    assert text_of(chunks) and finish_of(chunks) == "stop"


@PAIR
@STREAM
def test_include_usage(pinned: dict[str, Pinned], provider: str, model: str, stream: bool) -> None:
    sdk = pinned[provider].sdk()
    if not stream:  # a whole answer always carries usage
        check_answer(sdk.chat.completions.create(model=model, messages=HELLO), model)
        return
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    check_stream(chunks, usage=True)
    # What the client is told is what it is billed: the provider's usage, or router's estimate.
    p = pinned[provider]
    key = raw.headers["x-settlement-key"]
    (record,) = (r for r in asyncio.run(ledger.read(p.router.config)) if r["settlement_key"] == key)
    usage = chunks[-1].usage
    assert (record["prompt_tokens"], record["completion_tokens"]) == (
        usage.prompt_tokens,
        usage.completion_tokens,
    )
    assert record["usage_source"] == (
        "provider" if p.router.config.providers[provider].stream_usage else "estimated"
    )


@PAIR
@STREAM
def test_a_two_turn_tool_loop(pinned: dict[str, Pinned], provider: str, model: str, stream: bool) -> None:
    p = pinned[provider]
    sdk = p.sdk()
    if not p.accepts(model, "tools"):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER], stream=stream)
        refused(caught.value, "tools")
        return
    if stream:
        chunks = list(sdk.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER], stream=True))
        check_stream(chunks, usage=False)
        calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(call.function.arguments or "" for call in calls)
        assert finish_of(chunks) == "tool_calls"
    else:
        first = sdk.chat.completions.create(model=model, messages=HELLO, tools=[WEATHER])
        check_answer(first, model)
        (call,) = first.choices[0].message.tool_calls or []
        call_id, name, arguments = call.id, call.function.name, call.function.arguments  # type: ignore[union-attr]
        assert first.choices[0].finish_reason == "tool_calls"
    assert name == "get_weather"
    args = json.loads(arguments)
    assert set(args) == {"city", "unit", "days"}  # fits the tool's parameters
    assert (
        isinstance(args["city"], str) and args["unit"] in ("celsius", "fahrenheit") and 1 <= args["days"] <= 7
    )
    messages: Any = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21 degrees"},
    ]
    second = sdk.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    check_answer(second, model)
    assert second.choices[0].message.content and second.choices[0].finish_reason == "stop"


@PAIR
@STREAM
def test_parse_with_a_pydantic_model(
    pinned: dict[str, Pinned], provider: str, model: str, stream: bool
) -> None:
    p = pinned[provider]
    sdk = p.sdk()
    if not p.accepts(model, "json_schema"):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.parse(model=model, messages=HELLO, response_format=MathReasoning)
        refused(caught.value, "response_format")
        return
    if stream:
        with sdk.chat.completions.stream(
            model=model, messages=HELLO, response_format=MathReasoning
        ) as events:
            final = events.get_final_completion()
    else:
        final = sdk.chat.completions.parse(model=model, messages=HELLO, response_format=MathReasoning)
        check_answer(final, model)
    parsed = final.choices[0].message.parsed
    assert isinstance(parsed, MathReasoning) and parsed.steps and parsed.final_answer


@PAIR
@STREAM
def test_logprobs(pinned: dict[str, Pinned], provider: str, model: str, stream: bool) -> None:
    p = pinned[provider]
    sdk = p.sdk()
    if not p.accepts(model, "logprobs"):
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(
                model=model, messages=HELLO, logprobs=True, top_logprobs=2, stream=stream
            )
        refused(caught.value, "logprobs")
        return
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=model, messages=HELLO, logprobs=True, top_logprobs=2, stream=True
            )
        )
        check_stream(chunks, usage=False)
        tokens = [
            t
            for c in chunks
            if c.choices and c.choices[0].logprobs
            for t in c.choices[0].logprobs.content or []
        ]
        content = text_of(chunks)
    else:
        answer = sdk.chat.completions.create(model=model, messages=HELLO, logprobs=True, top_logprobs=2)
        check_answer(answer, model)
        tokens = answer.choices[0].logprobs.content or []  # type: ignore[union-attr]
        content = answer.choices[0].message.content or ""
    assert tokens and "".join(t.token for t in tokens) == content
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in tokens)


@PAIR
@STREAM
def test_stop(pinned: dict[str, Pinned], provider: str, model: str, stream: bool) -> None:
    sdk = pinned[provider].sdk()
    if stream:
        chunks = list(sdk.chat.completions.create(model=model, messages=HELLO, stop=["answer"], stream=True))
        check_stream(chunks, usage=False)
        content, finish = text_of(chunks), finish_of(chunks)
    else:
        answer = sdk.chat.completions.create(model=model, messages=HELLO, stop=["answer"])
        check_answer(answer, model)
        content, finish = answer.choices[0].message.content or "", answer.choices[0].finish_reason
    assert content == "This is a simulated " and finish == "stop"
