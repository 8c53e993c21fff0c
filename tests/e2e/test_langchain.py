"""langchain-openai's ChatOpenAI against router: the framework most agent code reaches it through.

One model per provider of the shipped config, each provider pinned (the session's
routers): invoke, stream with usage_metadata, bind_tools over two turns, and
with_structured_output — or, where the provider's document does not list the feature, the
400 naming the parameter, before anything went upstream.
"""

from __future__ import annotations

import openai
import pydantic
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.e2e.conftest import DEMO_KEY, Pinned

MODELS = {"trinity": "gpt-5.1", "chenyu": "doubao-seed-2-0-lite", "real200": "claude-sonnet-4"}


class Weather(pydantic.BaseModel):
    """The weather in a city."""

    city: str
    degrees: int
    sunny: bool


@tool
def get_weather(city: str, unit: str) -> str:
    """The weather in a city, in celsius or fahrenheit."""
    return f"sunny in {city}, 21 {unit}"


def chat_model(p: Pinned, provider: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODELS[provider],
        base_url=p.router.url + "/v1",
        api_key=DEMO_KEY,  # type: ignore[arg-type]
        max_retries=0,
        timeout=10,
    )


PROVIDERS = pytest.mark.parametrize("provider", list(MODELS))


@PROVIDERS
def test_invoke(pinned: dict[str, Pinned], provider: str) -> None:
    reply = chat_model(pinned[provider], provider).invoke("Hello!")
    assert isinstance(reply.content, str) and reply.content
    assert reply.usage_metadata is not None and reply.usage_metadata["total_tokens"] > 0
    assert reply.response_metadata["finish_reason"] == "stop"


@PROVIDERS
def test_stream_with_usage_metadata(pinned: dict[str, Pinned], provider: str) -> None:
    llm = chat_model(pinned[provider], provider)
    total: AIMessageChunk | None = None
    for piece in llm.stream("Hello!", stream_usage=True):
        assert isinstance(piece, AIMessageChunk)
        total = piece if total is None else total + piece
    assert total is not None and isinstance(total.content, str) and total.content
    usage = total.usage_metadata  # counted once, whichever provider answered
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


@PROVIDERS
def test_bind_tools_over_two_turns(pinned: dict[str, Pinned], provider: str) -> None:
    p = pinned[provider]
    llm = chat_model(p, provider).bind_tools([get_weather])
    question = HumanMessage("What is the weather in Paris?")
    if not p.accepts(MODELS[provider], "tools"):
        with pytest.raises(openai.BadRequestError) as caught:
            llm.invoke([question])
        assert caught.value.body["param"] == "tools"  # type: ignore[index]
        return
    first = llm.invoke([question])
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    answer = get_weather.invoke(call["args"])
    second = llm.invoke([question, first, ToolMessage(answer, tool_call_id=call["id"])])
    assert isinstance(second.content, str) and second.content and not second.tool_calls


@PROVIDERS
def test_with_structured_output(pinned: dict[str, Pinned], provider: str) -> None:
    p = pinned[provider]
    llm = chat_model(p, provider).with_structured_output(Weather)
    if not p.accepts(MODELS[provider], "json_schema"):
        with pytest.raises(openai.BadRequestError) as caught:
            llm.invoke("The weather in Paris?")
        assert caught.value.body["param"] == "response_format"  # type: ignore[index]
        return
    weather = llm.invoke("The weather in Paris?")
    assert isinstance(weather, Weather) and weather.city
