"""openai_responses.answer: a whole chat.completion -> a Responses `response`, checked against
the openai SDK's own model (and parsed by the SDK's client, as a client would). Pure, no I/O."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response

from router.api.endpoint import Answering
from router.api.openai_responses.answer import to_response

REQUEST: dict[str, Any] = {"model": "m", "input": "hi"}


def answering(**request: Any) -> Answering:
    return Answering(request={**REQUEST, **request}, answer_id="a1b2", created=1700000000)


def completion(
    message: dict[str, Any], finish: str = "stop", usage: Any = None, logprobs: Any = None
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None, **message},
                "logprobs": logprobs,
                "finish_reason": finish,
            }
        ],
        "usage": usage or {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def respond(upstream: dict[str, Any], **request: Any) -> Response:
    """The answer, validated by the SDK's model (what SDK clients parse)."""
    return Response.model_validate(to_response(upstream, answering(**request)))


def test_a_text_answer() -> None:
    response = respond(completion({"content": "Hello!"}))
    assert response.id == "resp_a1b2" and response.object == "response"
    assert response.created_at == 1700000000 and response.model == "upstream-model"
    assert response.status == "completed" and response.incomplete_details is None and response.error is None
    [item] = response.output
    assert item.type == "message" and item.id == "msg_a1b2" and item.status == "completed"
    assert item.role == "assistant"
    assert [(part.type, part.text) for part in item.content] == [("output_text", "Hello!")]  # type: ignore[union-attr]
    assert response.output_text == "Hello!"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (
        11,
        7,
        18,
    )


def test_usage_details() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 30},
    }
    response = respond(completion({"content": "x"}, usage=usage))
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 64
    assert response.usage.output_tokens_details.reasoning_tokens == 30


def test_tool_calls_become_function_call_items_after_the_text() -> None:
    calls = [
        {
            "id": "call_A",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_B", "type": "function", "function": {"name": "weather", "arguments": '{"city":"Rome"}'}},
    ]
    response = respond(completion({"content": "Checking.", "tool_calls": calls}, finish="tool_calls"))
    assert [item.type for item in response.output] == ["message", "function_call", "function_call"]
    first, second = response.output[1], response.output[2]
    assert first.type == "function_call" and second.type == "function_call"
    assert (first.id, first.call_id, first.name, first.arguments) == (
        "fc_a1b2",
        "call_A",
        "weather",
        '{"city":"Paris"}',
    )
    assert (second.id, second.call_id) == ("fc_a1b2_1", "call_B")
    assert response.status == "completed"


def test_a_call_without_an_id_gets_one_of_routers() -> None:
    calls = [{"id": None, "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    response = respond(completion({"tool_calls": calls}, finish="tool_calls"))
    [item] = response.output
    assert item.type == "function_call" and item.call_id == "call_a1b2_0"


def test_reasoning_comes_first_as_the_summary() -> None:
    response = respond(completion({"content": "42", "reasoning_content": "6 times 7"}))
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.id == "rs_a1b2"
    assert [s.text for s in reasoning.summary] == ["6 times 7"]


def test_a_refusal_is_a_refusal_part() -> None:
    response = respond(completion({"refusal": "I can't help with that."}))
    [item] = response.output
    assert item.type == "message"
    assert [(p.type, getattr(p, "refusal", None)) for p in item.content] == [
        ("refusal", "I can't help with that.")
    ]


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_an_answer_cut_short_is_incomplete(finish: str, reason: str) -> None:
    response = respond(completion({"content": "Once upon"}, finish=finish), max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == reason
    assert response.output[0].status == "incomplete"
    assert response.max_output_tokens == 16


def test_an_empty_answer_has_no_output_items() -> None:
    assert respond(completion({"content": ""})).output == []


def test_logprobs_map_to_the_output_text() -> None:
    tokens = [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
         "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": None}]},
        {"token": "!", "logprob": -0.2, "bytes": None, "top_logprobs": []},
    ]  # fmt: skip
    response = respond(
        completion({"content": "Hi!"}, logprobs={"content": tokens, "refusal": None}),
        include=["message.output_text.logprobs"],
    )
    [item] = response.output
    assert item.type == "message"
    [part] = item.content
    assert part.type == "output_text" and part.logprobs is not None
    assert [(lp.token, lp.bytes, lp.logprob) for lp in part.logprobs] == [
        ("Hi", [72, 105], -0.1),
        ("!", [33], -0.2),
    ]
    assert part.logprobs[0].top_logprobs[0].bytes == [72, 105]


def test_the_request_is_echoed_as_openai_echoes_it() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}]
    request = {
        "instructions": "Be brief.",
        "metadata": {"team": "search"},
        "temperature": 0.5,
        "top_p": 0.9,
        "tools": tools,
        "tool_choice": {"type": "function", "name": "f"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "reasoning": {"effort": "low", "summary": None},
        "truncation": "auto",
        "user": "u1",
        "store": True,
    }
    response = respond(completion({"content": "{}"}), **request)
    assert response.instructions == "Be brief." and response.metadata == {"team": "search"}
    assert (response.temperature, response.top_p) == (0.5, 0.9)
    assert [t.type for t in response.tools] == ["function"]
    assert response.tool_choice.type == "function"  # type: ignore[union-attr]
    assert response.parallel_tool_calls is False
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_object" and response.text.verbosity == "low"
    assert response.reasoning is not None and response.reasoning.effort == "low"
    assert response.truncation == "auto" and response.user == "u1"
    assert response.store is False  # nothing is stored, whatever the client asked
    assert response.previous_response_id is None


def test_defaults_when_the_request_sets_nothing() -> None:
    response = respond(completion({"content": "x"}))
    assert response.metadata == {} and response.tools == [] and response.tool_choice == "auto"
    assert response.parallel_tool_calls is True and response.truncation == "disabled"
    assert (
        response.text is not None and response.text.format is not None and response.text.format.type == "text"
    )


def test_the_sdk_client_parses_the_answer() -> None:
    calls = [{"id": "call_A", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    body = to_response(completion({"content": "Hello", "tool_calls": calls}), answering())
    client = openai.OpenAI(
        api_key="sk-x", base_url="http://router/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=body))),
    )  # fmt: skip
    response = client.responses.create(model="m", input="hi")
    assert response.output_text == "Hello"
    assert [item.type for item in response.output] == ["message", "function_call"]
