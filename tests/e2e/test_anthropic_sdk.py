"""/v1/messages (the Anthropic Messages API) as Anthropic's own SDK speaks it, the way coding
agents call router: through `router serve --demo`, and for the errors the shipped config
cannot show, through a router in front of misbehaving providers (endpoint_fixtures).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import (
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    TextBlock,
    ToolUseBlock,
)

from tests.conftest import RouterThread
from tests.e2e.conftest import DEMO_KEY, Served
from tests.e2e.endpoint_fixtures import (
    CUT,
    FAILING,
    LIMITED_KEY,
    OPEN_KEY,
    STEADY,
    TIMEOUT,
    UNSERVED,
    anthropic_client,
    edge_router,
    openai_client,
    tiny_png,
)

HELLO: Any = [{"role": "user", "content": "Hello!"}]
TOOLS: Any = [
    {
        "name": "lookup",
        "description": "look something up",
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    }
]


@pytest.fixture(scope="module")
def sdk(demo: Served) -> Iterator[anthropic.Anthropic]:
    with anthropic_client(demo.url) as client:
        yield client


@pytest.fixture(scope="module")
def edge() -> Iterator[RouterThread]:
    with edge_router() as started:
        yield started


def text_of(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if isinstance(block, TextBlock))


def prompt_tokens(message: anthropic.types.Message) -> int:
    """The whole prompt: Anthropic's `input_tokens` leaves out what was read from the cache."""
    usage = message.usage
    return (
        usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    )


def test_a_text_answer(sdk: anthropic.Anthropic) -> None:
    message = sdk.messages.create(model="gpt-5.1", max_tokens=100, messages=HELLO)
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == "gpt-5.1"
    assert text_of(message).startswith("This is a simulated answer from trinity")
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_a_system_prompt_is_part_of_the_prompt(sdk: anthropic.Anthropic) -> None:
    plain = sdk.messages.create(model="gpt-5.1", max_tokens=100, messages=HELLO)
    briefed = sdk.messages.create(
        model="gpt-5.1", max_tokens=100, system="Answer in one short sentence, politely.", messages=HELLO
    )
    assert prompt_tokens(briefed) > prompt_tokens(plain)


@pytest.mark.parametrize(("model", "provider"), [("gpt-4o", "trinity"), ("doubao-seed-1-6-vision", "chenyu")])
def test_an_image(sdk: anthropic.Anthropic, model: str, provider: str) -> None:
    image: Any = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(tiny_png()).decode(),
        },
    }
    content: Any = [image, {"type": "text", "text": "What colour is this pixel?"}]
    raw = sdk.messages.with_raw_response.create(
        model=model, max_tokens=100, messages=[{"role": "user", "content": content}]
    )
    assert raw.headers["x-router-provider"] == provider  # gpt-4o: real200 takes no images
    assert text_of(raw.parse()).startswith(f"This is a simulated answer from {provider}")


def test_an_image_to_a_text_model_is_refused(sdk: anthropic.Anthropic) -> None:
    image: Any = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="doubao-seed-2-0-lite", max_tokens=100, messages=[{"role": "user", "content": [image]}]
        )
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    message = caught.value.body["error"]["message"]  # type: ignore[index]
    assert "image" in message and "'messages'" in message  # the client's parameter, not chat's


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-5.1"])
def test_a_tool_loop(sdk: anthropic.Anthropic, model: str) -> None:
    first = sdk.messages.create(model=model, max_tokens=200, messages=HELLO, tools=TOOLS)
    assert first.stop_reason == "tool_use"
    (use,) = [block for block in first.content if isinstance(block, ToolUseBlock)]
    assert use.name == "lookup" and isinstance(use.input, dict) and isinstance(use.input["query"], str)
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "it is 42"}
    conversation: Any = [
        *HELLO,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [result]},
    ]
    second = sdk.messages.create(model=model, max_tokens=200, messages=conversation, tools=TOOLS)
    assert second.stop_reason == "end_turn"
    assert text_of(second).startswith("The tool answered with 8 characters.")


def test_the_stream_helper(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model="gpt-5.1", max_tokens=100, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1  # streamed, not one block at the end
    assert "".join(pieces) == text_of(final)
    assert text_of(final).startswith("This is a simulated answer from trinity")
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


def test_the_raw_events_in_order(sdk: anthropic.Anthropic) -> None:
    events = list(sdk.messages.create(model="gpt-5.1", max_tokens=100, messages=HELLO, stream=True))
    first, last, ending = events[0], events[-1], events[-2]
    assert isinstance(first, RawMessageStartEvent) and first.message.content == []
    assert isinstance(events[1], RawContentBlockStartEvent) and events[1].content_block.type == "text"
    deltas = events[2:-3]
    assert deltas and all(isinstance(e, RawContentBlockDeltaEvent) and e.index == 0 for e in deltas)
    assert isinstance(events[-3], RawContentBlockStopEvent) and events[-3].index == 0
    assert isinstance(ending, RawMessageDeltaEvent) and ending.delta.stop_reason == "end_turn"
    assert ending.usage.output_tokens > 0
    assert isinstance(last, RawMessageStopEvent)


def test_a_streamed_tool_use(sdk: anthropic.Anthropic) -> None:
    with sdk.messages.stream(model="gpt-4o", max_tokens=200, messages=HELLO, tools=TOOLS) as stream:
        kinds = {event.type for event in stream}
        final = stream.get_final_message()
    assert "input_json" in kinds  # the arguments arrive as partial JSON, as Anthropic sends them
    assert final.stop_reason == "tool_use"
    (use,) = [block for block in final.content if isinstance(block, ToolUseBlock)]
    assert use.name == "lookup" and isinstance(use.input, dict) and isinstance(use.input["query"], str)
    assert use.id


def test_count_tokens(sdk: anthropic.Anthropic) -> None:
    short = sdk.messages.count_tokens(model="gpt-5.1", messages=HELLO)
    longer = sdk.messages.count_tokens(
        model="gpt-5.1", messages=[{"role": "user", "content": "Hello! " * 200}], tools=TOOLS
    )
    assert 0 < short.input_tokens < longer.input_tokens


def test_count_tokens_errors_are_anthropic_errors(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="no-such-model", messages=HELLO)
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.count_tokens(model="gpt-5.1", messages=[])
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


# -- keys ------------------------------------------------------------------------------------


def test_the_key_as_x_api_key_and_as_a_bearer_token(demo: Served) -> None:
    with anthropic_client(demo.url) as by_header:  # the SDK sends api_key as x-api-key
        assert text_of(by_header.messages.create(model="gpt-5.1", max_tokens=50, messages=HELLO))
    with anthropic.Anthropic(
        base_url=demo.url, auth_token=DEMO_KEY, max_retries=0, timeout=TIMEOUT
    ) as bearer:
        assert text_of(bearer.messages.create(model="gpt-5.1", max_tokens=50, messages=HELLO))
        assert bearer.messages.count_tokens(model="gpt-5.1", messages=HELLO).input_tokens > 0


def test_a_wrong_key_is_an_authentication_error(demo: Served) -> None:
    with (
        anthropic_client(demo.url, key="sk-wrong") as sdk,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        sdk.messages.create(model="gpt-5.1", max_tokens=50, messages=HELLO)
    assert caught.value.body == {  # Anthropic's shape, not OpenAI's
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


# -- errors, as the SDK's exception classes ------------------------------------------------


def test_an_unknown_model_is_not_found(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model="no-such-model", max_tokens=50, messages=HELLO)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_a_bad_parameter_is_named_in_the_message(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model="gpt-5.1", max_tokens=0, messages=HELLO)
    assert "max_tokens" in caught.value.body["error"]["message"]  # type: ignore[index]


def test_an_embedding_model_cannot_answer_messages(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(model="text-embedding-3-small", max_tokens=50, messages=HELLO)
    assert "embedding model" in caught.value.message


def test_a_server_tool_is_refused(sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk.messages.create(
            model="gpt-5.1",
            max_tokens=50,
            messages=HELLO,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    assert "tools[0]" in caught.value.message


def test_over_the_clients_rate_limit(edge: RouterThread) -> None:
    with anthropic_client(edge.url, key=LIMITED_KEY) as sdk:
        assert text_of(sdk.messages.create(model=STEADY, max_tokens=50, messages=HELLO))
        with pytest.raises(anthropic.RateLimitError) as caught:  # rpm: 1
            sdk.messages.create(model=STEADY, max_tokens=50, messages=HELLO)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(caught.value.response.headers["retry-after"]) > 0


def test_a_failing_provider_is_an_api_error(edge: RouterThread) -> None:
    with (
        anthropic_client(edge.url, key=OPEN_KEY) as sdk,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        sdk.messages.create(model=FAILING, max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 502  # the provider's 503, as router reports an upstream failure
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_no_provider_available_is_overloaded(edge: RouterThread) -> None:
    with anthropic_client(edge.url, key=OPEN_KEY) as sdk:
        # The provider answers 无可用渠道 (no channel for the model): router learns it cannot
        # serve the model there. That first answer is the provider's failure ...
        with pytest.raises(anthropic.InternalServerError) as first:
            sdk.messages.create(model=UNSERVED, max_tokens=50, messages=HELLO)
        assert first.value.status_code == 502
        # ... and while it is known, no provider is left: Anthropic's "overloaded, retry soon".
        with pytest.raises(anthropic.OverloadedError) as caught:
            sdk.messages.create(model=UNSERVED, max_tokens=50, messages=HELLO)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    assert isinstance(caught.value, anthropic.APIStatusError)
    # The same state reads as OpenAI's 503 on the OpenAI paths.
    with openai_client(edge.url, key=OPEN_KEY) as chat, pytest.raises(openai.InternalServerError) as plain:
        chat.chat.completions.create(model=UNSERVED, messages=HELLO)
    assert plain.value.status_code == 503 and plain.value.code == "no_provider_available"


def test_a_stream_broken_half_way_raises_in_the_sdk(edge: RouterThread) -> None:
    received: list[str] = []
    with (
        anthropic_client(edge.url, key=OPEN_KEY) as sdk,
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk.messages.stream(model=CUT, max_tokens=100, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)
    assert received  # it had begun
    assert not "".join(received).endswith(".")  # never passed off as a whole answer
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "api_error" and "cutting" in error["message"]
