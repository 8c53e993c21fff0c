"""anthropic_messages answers and errors: a whole chat.completion -> an Anthropic message, and
RouterErrors -> Anthropic's error shape, checked with the anthropic SDK's own types and client."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import ErrorResponse, Message

from router import errors
from router.api.anthropic_messages.answer import to_message
from router.api.anthropic_messages.errors import render, stream_event
from router.api.endpoint import Answering

REQUEST = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


def answering(**request: Any) -> Answering:
    return Answering(request={**REQUEST, **request}, answer_id="a1b2c3", created=1_700_000_000)


def completion(
    message: dict[str, Any], finish: str | None = "stop", usage: Any = None, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                "logprobs": None,
                **choice,
            }
        ],
        "usage": usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


def message(upstream: dict[str, Any], **request: Any) -> Message:
    """The translated answer, parsed by the SDK as a client would."""
    out = to_message(upstream, answering(**request))
    return Message.model_validate(out)


def call(name: str, arguments: str, id: str | None = "call_1") -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if id is not None:
        out["id"] = id
    return out


# -- answers -----------------------------------------------------------------------


def test_a_text_answer() -> None:
    answer = message(completion({"content": "Hello!", "refusal": None}))
    assert answer.id == "msg_a1b2c3" and answer.type == "message" and answer.role == "assistant"
    assert answer.model == "upstream-model"
    assert [(b.type, getattr(b, "text", None)) for b in answer.content] == [("text", "Hello!")]
    assert (answer.stop_reason, answer.stop_sequence) == ("end_turn", None)
    assert answer.usage.input_tokens == 12 and answer.usage.output_tokens == 5


def test_reasoning_comes_first_as_a_thinking_block() -> None:
    answer = message(completion({"content": "42", "reasoning_content": "let me think"}))
    assert [b.type for b in answer.content] == ["thinking", "text"]
    thinking = answer.content[0]
    assert thinking.type == "thinking" and (thinking.thinking, thinking.signature) == ("let me think", "")


def test_an_empty_answer_has_no_blocks() -> None:
    assert message(completion({"content": ""})).content == []
    assert message(completion({"content": None})).content == []


def test_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    upstream = completion(
        {
            "content": "checking",
            "tool_calls": [call("get_weather", '{"city": "Paris"}', "call_a"), call("now", "", "call_b")],
        },
        finish="tool_calls",
    )
    answer = message(upstream)
    assert [b.type for b in answer.content] == ["text", "tool_use", "tool_use"]
    first, second = answer.content[1], answer.content[2]
    assert first.type == "tool_use" and (first.id, first.name, first.input) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
    )
    assert second.type == "tool_use" and (second.id, second.input) == ("call_b", {})
    assert answer.stop_reason == "tool_use"


def test_tool_calls_end_in_tool_use_whatever_the_finish_reason() -> None:
    answer = message(completion({"content": None, "tool_calls": [call("f", "{}")]}, finish="stop"))
    assert answer.stop_reason == "tool_use"


def test_a_tool_call_without_an_id_gets_one_of_this_answer() -> None:
    answer = message(completion({"tool_calls": [call("f", "{}", id=None)]}, finish="tool_calls"))
    assert answer.content[0].type == "tool_use" and answer.content[0].id == "toolu_a1b2c3_0"


@pytest.mark.parametrize("arguments", ['{"city": "Par', "[1, 2]", "null", "not json"])
def test_arguments_that_are_not_an_object_are_the_providers_failure(arguments: str) -> None:
    upstream = completion({"tool_calls": [call("get_weather", arguments)]}, finish="tool_calls")
    with pytest.raises(errors.UpstreamProtocolError, match="get_weather"):
        to_message(upstream, answering())


def test_a_tool_call_without_a_name_is_the_providers_failure() -> None:
    upstream = completion({"tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}, finish="tool_calls")
    with pytest.raises(errors.UpstreamProtocolError):
        to_message(upstream, answering())


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("odd", "end_turn"),
    ],
)
def test_finish_reasons(finish: str | None, stop_reason: str) -> None:
    assert message(completion({"content": "x"}, finish=finish)).stop_reason == stop_reason


def test_a_matched_stop_sequence_is_named() -> None:
    upstream = completion({"content": "one two"}, stop_reason="END")
    answer = message(upstream, stop_sequences=["STOP", "END"])
    assert (answer.stop_reason, answer.stop_sequence) == ("stop_sequence", "END")


def test_a_matched_stop_that_is_not_the_clients_is_an_end_turn() -> None:
    # vLLM reports a stop token id as a number, and the provider's own stop strings as text.
    for matched in ("<|im_end|>", 151645):
        answer = message(completion({"content": "x"}, stop_reason=matched), stop_sequences=["END"])
        assert (answer.stop_reason, answer.stop_sequence) == ("end_turn", None)


def test_a_refusal_is_the_answers_text_and_its_stop_reason() -> None:
    answer = message(completion({"content": None, "refusal": "I can't help with that."}))
    assert answer.content[0].type == "text" and answer.content[0].text == "I can't help with that."
    assert answer.stop_reason == "refusal"


def test_usage_counts_cached_tokens_apart() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    answer = message(completion({"content": "x"}, usage=usage))
    assert answer.usage.input_tokens == 40
    assert answer.usage.cache_read_input_tokens == 60
    assert answer.usage.cache_creation_input_tokens == 0
    assert answer.usage.output_tokens == 7


# -- errors ----------------------------------------------------------------------------


def status_error(status: int) -> errors.UpstreamStatusError:
    return errors.UpstreamStatusError(
        "provider says no",
        provider="p",
        client_status=status,
        client_code="x",
        retryable=False,
        verdict="client",
    )


CASES = [
    (
        errors.InvalidRequest("'max_tokens' must be ...", param="max_tokens"),
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
    ),
    (
        errors.ParamNotAllowed("not for this model", param="top_k"),
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
    ),
    (errors.InvalidApiKey("bad key"), 401, "authentication_error", anthropic.AuthenticationError),
    (errors.InsufficientQuota("budget spent"), 402, "billing_error", anthropic.APIStatusError),
    (errors.ModelNotAllowed("not yours"), 403, "permission_error", anthropic.PermissionDeniedError),
    (errors.ModelNotFound("no such model"), 404, "not_found_error", anthropic.NotFoundError),
    (errors.IdempotencyConflict("in flight"), 409, "invalid_request_error", anthropic.ConflictError),
    (errors.RequestTooLarge("too big"), 413, "request_too_large", anthropic.RequestTooLargeError),
    (errors.IdempotencyKeyReused("reused"), 422, "invalid_request_error", anthropic.UnprocessableEntityError),
    (errors.RateLimited("slow down"), 429, "rate_limit_error", anthropic.RateLimitError),
    (errors.NoProviderAvailable("all down"), 529, "overloaded_error", anthropic.OverloadedError),
    (errors.TooManyConnections("busy"), 529, "overloaded_error", anthropic.OverloadedError),
    (errors.StateUnavailable("state down"), 503, "api_error", anthropic.InternalServerError),
    (errors.UpstreamConnectionLost("reset"), 502, "api_error", anthropic.InternalServerError),
    (errors.UpstreamTimeout("slow"), 504, "timeout_error", anthropic.InternalServerError),
    (errors.DeadlineExceeded("deadline"), 504, "timeout_error", anthropic.InternalServerError),
    (errors.RouterError("boom"), 500, "api_error", anthropic.InternalServerError),
    (status_error(400), 400, "invalid_request_error", anthropic.BadRequestError),
    (status_error(429), 429, "rate_limit_error", anthropic.RateLimitError),
    (status_error(502), 502, "api_error", anthropic.InternalServerError),
]


@pytest.mark.parametrize(("error", "status", "kind", "_"), CASES, ids=[type(c[0]).__name__ for c in CASES])
def test_error_status_and_type(error: errors.RouterError, status: int, kind: str, _: type) -> None:
    got_status, body = render(error)
    parsed = orjson.loads(body)
    assert got_status == status
    assert parsed["type"] == "error" and parsed["error"]["type"] == kind
    assert error.message in parsed["error"]["message"]
    if kind != "request_too_large":  # documented by Anthropic, sent by its edge: not in the SDK's union
        ErrorResponse.model_validate(parsed)


@pytest.mark.parametrize(
    ("error", "status", "_", "exception"), CASES, ids=[type(c[0]).__name__ for c in CASES]
)
def test_the_sdk_raises_its_matching_exception(
    error: errors.RouterError, status: int, _: str, exception: type[anthropic.APIStatusError]
) -> None:
    got_status, body = render(error)
    transport = httpx.MockTransport(lambda request: httpx.Response(got_status, content=body))
    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://router.test",
        max_retries=0,
        http_client=httpx.Client(transport=transport),
    )
    with pytest.raises(exception) as caught:
        client.messages.create(**REQUEST)  # type: ignore[call-overload]
    assert type(caught.value) is exception and caught.value.status_code == status
    assert type(caught.value.body) is dict and caught.value.body["error"]["message"].endswith(error.message)


def test_the_param_is_named_in_the_message_once() -> None:
    _, body = render(errors.InvalidRequest("must be a whole number", param="max_tokens"))
    assert orjson.loads(body)["error"]["message"] == "max_tokens: must be a whole number"
    _, body = render(errors.InvalidRequest("'max_tokens' must be a whole number", param="max_tokens"))
    assert orjson.loads(body)["error"]["message"] == "'max_tokens' must be a whole number"


def test_a_stream_error_event() -> None:
    event = stream_event(errors.NoProviderAvailable("every provider is down"))
    assert event.startswith(b"event: error\ndata: ") and event.endswith(b"\n\n")
    parsed = orjson.loads(event.split(b"data: ", 1)[1])
    assert parsed == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "every provider is down"},
    }
    ErrorResponse.model_validate(parsed)
