"""/v1/responses (the OpenAI Responses API, stateless) as the official openai SDK calls it,
through `router serve --demo`; a stream broken half-way through a router in front of a
provider that cuts its streams (endpoint_fixtures).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseContentPartAddedEvent,
    ResponseCreatedEvent,
    ResponseFailedEvent,
    ResponseFunctionCallArgumentsDeltaEvent,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseInProgressEvent,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseStreamEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)

from tests.conftest import RouterThread
from tests.e2e.conftest import Served
from tests.e2e.endpoint_fixtures import CUT, OPEN_KEY, edge_router, openai_client

MODEL = "gpt-5.1"
"""trinity's only: its answers name trinity, and it takes tools and json_schema."""
TOOLS: Any = [
    {
        "type": "function",
        "name": "lookup",
        "description": "look something up",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
            "additionalProperties": False,
        },
        "strict": True,
    }
]
SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def sdk(demo: Served) -> Iterator[openai.OpenAI]:
    with openai_client(demo.url) as client:
        yield client


@pytest.fixture(scope="module")
def edge() -> Iterator[RouterThread]:
    with edge_router() as started:
        yield started


def function_calls(response: Response) -> list[ResponseFunctionToolCall]:
    return [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]


def test_plain_text(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(model=MODEL, input="Hello!")
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.model == MODEL
    assert response.output_text.startswith("This is a simulated answer from trinity")
    assert [item.type for item in response.output] == ["message"]
    assert response.usage is not None and response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_instructions_are_part_of_the_prompt(sdk: openai.OpenAI) -> None:
    plain = sdk.responses.create(model=MODEL, input="Hello!")
    briefed = sdk.responses.create(
        model=MODEL, input="Hello!", instructions="Answer in one short sentence, politely."
    )
    assert briefed.instructions == "Answer in one short sentence, politely."
    assert briefed.usage is not None and plain.usage is not None
    assert briefed.usage.input_tokens > plain.usage.input_tokens  # they reached the provider


def test_a_message_list_as_input(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model=MODEL,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "Hello!"}]},
        ],
    )
    assert response.output_text.startswith("This is a simulated answer from trinity")


def test_function_calling_over_two_turns(sdk: openai.OpenAI) -> None:
    first = sdk.responses.create(model=MODEL, input="Hello!", tools=TOOLS)
    (call,) = function_calls(first)
    assert call.name == "lookup" and call.call_id
    assert isinstance(json.loads(call.arguments)["query"], str)
    assert first.output_text == ""
    conversation: Any = [
        {"role": "user", "content": "Hello!"},
        *(item.model_dump(exclude_none=True) for item in first.output),  # sent back as it came
        {"type": "function_call_output", "call_id": call.call_id, "output": "it is 42"},
    ]
    second = sdk.responses.create(model=MODEL, input=conversation, tools=TOOLS)
    assert function_calls(second) == []
    assert second.output_text.startswith("The tool answered with 8 characters.")


def test_structured_output(sdk: openai.OpenAI) -> None:
    response = sdk.responses.create(
        model=MODEL,
        input="Hello!",
        text={"format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}},
    )
    jsonschema.validate(json.loads(response.output_text), SCHEMA)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_a_stream_of_typed_events(sdk: openai.OpenAI) -> None:
    events: list[ResponseStreamEvent] = list(sdk.responses.create(model=MODEL, input="Hello!", stream=True))
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(set(numbers))  # increasing, none repeated
    assert isinstance(events[0], ResponseCreatedEvent) and events[0].response.status == "in_progress"
    assert not any(isinstance(e, ResponseInProgressEvent) for e in events)  # created says it all
    assert any(isinstance(e, ResponseOutputItemAddedEvent) for e in events)
    assert any(isinstance(e, ResponseContentPartAddedEvent) for e in events)
    deltas = [e.delta for e in events if isinstance(e, ResponseTextDeltaEvent)]
    assert len(deltas) > 1  # streamed piece by piece
    (done,) = [e for e in events if isinstance(e, ResponseTextDoneEvent)]
    assert done.text == "".join(deltas)
    assert any(isinstance(e, ResponseOutputItemDoneEvent) for e in events)
    completed = events[-1]
    assert isinstance(completed, ResponseCompletedEvent)
    assert completed.response.status == "completed"
    assert completed.response.output_text == done.text
    assert completed.response.usage is not None and completed.response.usage.total_tokens > 0


def test_the_stream_helper(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model=MODEL, input="Hello!") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.output_text == "".join(deltas)
    assert final.output_text.startswith("This is a simulated answer from trinity")
    assert final.usage is not None and final.usage.output_tokens > 0


def test_a_streamed_function_call(sdk: openai.OpenAI) -> None:
    with sdk.responses.stream(model=MODEL, input="Hello!", tools=TOOLS) as stream:
        events = list(stream)
        final = stream.get_final_response()
    pieces = [e.delta for e in events if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent)]
    (done,) = [e for e in events if isinstance(e, ResponseFunctionCallArgumentsDoneEvent)]
    assert pieces and "".join(pieces) == done.arguments
    (call,) = function_calls(final)
    assert call.name == "lookup" and call.arguments == done.arguments
    assert isinstance(json.loads(call.arguments)["query"], str)


# -- what a stateless router refuses, and other errors -----------------------------------------


def test_previous_response_id_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input="And then?", previous_response_id="resp_0123456789")
    assert caught.value.param == "previous_response_id"
    assert "x-router-attempts" not in caught.value.response.headers  # refused before any provider


def test_a_built_in_tool_is_refused(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model=MODEL, input="Hello!", tools=[{"type": "web_search"}])
    assert caught.value.param == "tools[0].type"


def test_an_embedding_model_cannot_respond(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.responses.create(model="text-embedding-3-small", input="Hello!")
    assert caught.value.param == "model"


def test_an_unknown_model_is_not_found(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.responses.create(model="no-such-model", input="Hello!")
    assert caught.value.code == "model_not_found"


def test_a_stream_broken_half_way(edge: RouterThread) -> None:
    events: list[ResponseStreamEvent] = []
    with openai_client(edge.url, key=OPEN_KEY) as sdk, pytest.raises(openai.APIError) as caught:
        events.extend(sdk.responses.create(model=CUT, input="Hello!", stream=True))
    assert any(isinstance(e, ResponseTextDeltaEvent) for e in events)  # it had begun
    assert not any(isinstance(e, ResponseCompletedEvent) for e in events)
    (failed,) = [e for e in events if isinstance(e, ResponseFailedEvent)]
    assert failed.response.status == "failed"
    assert failed.response.error is not None and "cutting" in failed.response.error.message
    assert "cutting" in caught.value.message  # then the `error` event, which the SDK raises
