"""The official openai SDK against `router serve --demo`, the way a newcomer meets router."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e.conftest import DEMO_KEY, Served

# One model per dialect in the shipped providers.yaml.
MODELS = {"trinity": "gpt-5.1", "chenyu": "doubao-seed-2-0-lite", "real200": "claude-sonnet-4"}
HELLO: Any = [{"role": "user", "content": "Hello!"}]
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "look something up",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


_OPEN: list[openai.OpenAI] = []
"""The clients a test made: closed after it, so no socket is left to a garbage collector's warning."""


def client(served: Served, *, key: str = DEMO_KEY, v1: bool = True) -> openai.OpenAI:
    sdk = openai.OpenAI(base_url=served.url + ("/v1" if v1 else ""), api_key=key, max_retries=0, timeout=10)
    _OPEN.append(sdk)
    return sdk


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.mark.parametrize("dialect", MODELS)
def test_non_streaming_against_each_dialect(demo: Served, dialect: str) -> None:
    response = client(demo).chat.completions.create(model=MODELS[dialect], messages=HELLO)
    assert response.choices[0].message.content is not None
    assert response.choices[0].message.content.startswith(f"This is a simulated answer from {dialect}")
    assert response.usage is not None and response.usage.total_tokens > 0


@pytest.mark.parametrize("dialect", MODELS)
def test_streaming_against_each_dialect(demo: Served, dialect: str) -> None:
    stream = client(demo).chat.completions.create(model=MODELS[dialect], messages=HELLO, stream=True)
    pieces = []
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]  # a client that did not ask for usage never gets a chunk without choices
        pieces.append(choice.delta.content or "")
        finish = choice.finish_reason or finish
    assert "".join(pieces).startswith(f"This is a simulated answer from {dialect}")
    assert finish == "stop"


def test_usage_chunk_only_when_asked(demo: Served) -> None:
    chunks = list(
        client(demo).chat.completions.create(
            model=MODELS["trinity"], messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.choices for c in chunks[:-1])


def test_the_path_without_v1(demo: Served) -> None:
    response = client(demo, v1=False).chat.completions.create(model=MODELS["real200"], messages=HELLO)
    assert response.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4"])
def test_a_tool_call_round_trip(demo: Served, model: str) -> None:
    sdk = client(demo)
    first = sdk.chat.completions.create(model=model, messages=HELLO, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup"  # type: ignore[union-attr]
    assert set(json.loads(call.function.arguments)) == {"query"}  # type: ignore[union-attr]  # fits the schema
    messages: Any = [
        *HELLO,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "it is 42"},
    ]
    second = sdk.chat.completions.create(model=model, messages=messages, tools=TOOLS)
    assert second.choices[0].message.content.startswith("The tool answered with 8 characters.")  # type: ignore[union-attr]


def test_a_streamed_tool_call(demo: Served) -> None:
    stream = client(demo).chat.completions.create(model="gpt-4o", messages=HELLO, tools=TOOLS, stream=True)
    arguments, name = "", None
    for chunk in stream:
        for call in chunk.choices[0].delta.tool_calls or []:
            name = call.function.name or name  # type: ignore[union-attr]
            arguments += call.function.arguments or ""  # type: ignore[union-attr]
    assert name == "lookup" and isinstance(json.loads(arguments)["query"], str)


def test_structured_output_passes_through(demo: Served) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    response = client(demo).chat.completions.create(model="gpt-4o", messages=HELLO, response_format=fmt)
    assert isinstance(json.loads(response.choices[0].message.content or "")["answer"], str)


# -- each error, as the SDK's exception class ---------------------------------------------------


def test_bad_request_for_both_token_limits(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(demo).chat.completions.create(
            model="gpt-4o", messages=HELLO, max_tokens=5, max_completion_tokens=5
        )
    assert caught.value.body["param"] == "max_tokens"  # type: ignore[index]


def test_not_found_for_an_unknown_model(demo: Served) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(demo).chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.code == "model_not_found"


def test_authentication_error_for_a_bad_key(demo: Served) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(demo, key="sk-wrong").chat.completions.create(model="gpt-4o", messages=HELLO)


def test_a_disallowed_value_is_a_bad_request(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(demo).chat.completions.create(
            model="gemini-3-pro-preview", messages=HELLO, reasoning_effort="minimal"
        )
    assert "allowed: 'low', 'medium', 'high'" in caught.value.message


def test_what_no_provider_of_the_model_accepts_is_refused_up_front(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # chenyu documents no tool role
        client(demo).chat.completions.create(
            model="doubao-seed-2-0-lite",
            messages=[
                *HELLO,
                {"role": "assistant", "content": "x"},
                {"role": "tool", "tool_call_id": "c", "content": "1"},
            ],
        )
    assert caught.value.body["param"] == "messages[2].role"  # type: ignore[index]
    assert "x-router-attempts" not in caught.value.response.headers  # nothing went upstream


def test_a_providers_client_error_passes_through(demo: Served) -> None:
    with pytest.raises(openai.BadRequestError) as caught:  # the provider's 400: the client's fault
        client(demo).chat.completions.create(
            model="gpt-5.1",
            messages=HELLO,
            extra_body={"sim_fault": "status=400,code=context_length_exceeded"},
        )
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.response.headers["x-router-attempts"] == "1"


def test_a_model_object_is_retrieved(demo: Served) -> None:
    assert client(demo).models.retrieve("gpt-5.1").id == "gpt-5.1"


def test_rate_limit_and_server_errors_from_providers(demo: Served) -> None:
    sdk = client(demo)  # claude-sonnet-4 has one provider: its failures are the answer
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(
            model="claude-sonnet-4", messages=HELLO, extra_body={"sim_fault": "status=429,retry_after=1"}
        )
    assert limited.value.response.headers["retry-after"] == "1"
    assert limited.value.response.headers["x-router-attempts"] == "3"  # waited out twice, then gave up
    with pytest.raises(openai.InternalServerError) as failed:
        sdk.chat.completions.create(
            model="claude-sonnet-4", messages=HELLO, extra_body={"sim_fault": "status=503"}
        )
    assert failed.value.status_code == 502


def test_a_stream_cut_after_it_began_raises_in_the_sdk(demo: Served) -> None:
    stream = client(demo).chat.completions.create(
        model="gpt-5.1", messages=HELLO, stream=True, extra_body={"sim_fault": "cut=3"}
    )
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "trinity" in caught.value.message
    assert not any(c for c in received if c.endswith("."))  # never a whole answer
