"""openai_responses.request: a Responses create body -> the chat body router sends. Pure, no I/O.

Every translated body must pass router's own chat checks (validate.py), and the bodies the
openai SDK itself builds are translated too.
"""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from router import capabilities
from router.api.openai_responses.request import to_chat
from router.errors import InvalidRequest
from router.validate import validate


def chat(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "m")
    out = to_chat(body)
    validate(out)  # what the chat endpoint would check holds for every translation
    return out


def messages(input: Any, **body: Any) -> list[dict[str, Any]]:
    return chat(input=input, **body)["messages"]  # type: ignore[no-any-return]


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def refused(**body: Any) -> InvalidRequest:
    body.setdefault("model", "m")
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    return caught.value


# -- input -----------------------------------------------------------------------


def test_a_string_input_is_one_user_message() -> None:
    assert chat(input="hi") == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_instructions_lead_as_a_system_message() -> None:
    assert messages("hi", instructions="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert messages("hi", instructions="") == [{"role": "user", "content": "hi"}]


def test_message_items_keep_their_roles_and_developer_reads_as_system() -> None:
    items = [
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "More."}]},
        {"role": "user", "content": "q"},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "a", "annotations": []},
                     {"type": "output_text", "text": "b", "annotations": []}]},
    ]  # fmt: skip
    assert messages(items) == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More."},
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "ab"},
    ]


def test_user_content_parts_become_chat_parts() -> None:
    parts = [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "https://x/cat.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        {"type": "input_file", "file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"},
        {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
    ]
    [message] = messages([{"role": "user", "content": parts}])
    assert message == {
        "role": "user",
        "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklG", "format": "wav"}},
        ],
    }


def test_a_refusal_in_history_is_assistant_text() -> None:
    item = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}
    assert messages([item]) == [{"role": "assistant", "content": "I can't."}]


def test_function_calls_after_an_assistant_message_join_it_and_outputs_become_tool_messages() -> None:
    items = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"city":"Rome"}',
         "id": "fc_2", "status": "completed"},
        {"type": "function_call_output", "call_id": "c1", "output": "20C"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "25C"}, {"type": "input_text", "text": "sunny"}]},
    ]  # fmt: skip
    assert messages(items) == [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "20C"},
        {"role": "tool", "tool_call_id": "c2", "content": "25C\nsunny"},
    ]


def test_function_calls_alone_make_an_assistant_message_without_text() -> None:
    items = [
        {"role": "user", "content": "go"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "done"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{}"},
    ]
    out = messages(items)
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "assistant"]
    assert out[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert out[3]["tool_calls"][0]["id"] == "c2"


def test_only_reasoning_items_leave_nothing_to_answer() -> None:
    error = refused(input=[{"type": "reasoning", "id": "rs_1", "summary": []}])
    assert error.param == "input"


@pytest.mark.parametrize(
    ("input", "param"),
    [
        (None, "input"),
        (42, "input"),
        ([], "input"),
        (["hi"], "input[0]"),
        ([{"role": "tool", "content": "x"}], "input[0].role"),
        ([{"role": "user", "content": 3}], "input[0].content"),
        ([{"role": "user", "content": [{"type": "input_video"}]}], "input[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_text"}]}], "input[0].content[0].text"),
        (user({"type": "input_image", "file_id": "file-1"}), "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_image"}]}], "input[0].content[0].image_url"),
        (user({"type": "input_file", "file_id": "file-1"}), "input[0].content[0].file_id"),
        ([{"role": "user", "content": [{"type": "input_file", "file_url": "https://x"}]}],
         "input[0].content[0].file_url"),
        ([{"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}],
         "input[0].content[0].type"),
        ([{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}],
         "input[0].content[0].type"),
        ([{"role": "user", "content": "q"}, {"type": "item_reference", "id": "msg_1"}], "input[1]"),
        ([{"type": "web_search_call", "id": "ws_1"}], "input[0].type"),
        ([{"type": "custom_tool_call", "call_id": "c", "name": "x", "input": ""}], "input[0].type"),
        ([{"type": "function_call", "name": "f", "arguments": "{}"}], "input[0].call_id"),
        ([{"type": "function_call_output", "call_id": "c1"}], "input[0].output"),
        ([{"type": "function_call_output", "call_id": "c1",
           "output": [{"type": "input_image", "image_url": "https://x"}]}], "input[0].output[0].type"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_naming_the_parameter(input: Any, param: str) -> None:
    assert refused(input=input).param == param


def test_an_item_reference_is_refused_as_state_router_does_not_keep() -> None:
    error = refused(input=[{"type": "item_reference", "id": "msg_1"}])
    assert "stateless" in error.message and error.status == 400


# -- tools ---------------------------------------------------------------------------

WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}
CHAT_WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}


def test_function_tools_become_chat_tools() -> None:
    bare = {"type": "function", "name": "now", "parameters": None, "strict": None}
    out = chat(input="hi", tools=[WEATHER, bare], parallel_tool_calls=False)
    assert out["tools"] == [CHAT_WEATHER, {"type": "function", "function": {"name": "now"}}]
    assert out["parallel_tool_calls"] is False
    assert capabilities.needs(out) == {"tools": "tools"}  # routed to providers that take tools


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search"},
        {"type": "web_search_preview"},
        {"type": "file_search", "vector_store_ids": ["vs_1"]},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
        {"type": "image_generation"},
        {"type": "mcp", "server_label": "x", "server_url": "https://x"},
        {"type": "local_shell"},
        {"type": "custom", "name": "apply_patch"},
    ],
)
def test_built_in_tools_are_refused_naming_their_type(tool: dict[str, Any]) -> None:
    error = refused(input="hi", tools=[WEATHER, tool])
    assert error.param == "tools[1].type"
    assert "stateless" in error.message and "function tools" in error.message


@pytest.mark.parametrize(
    ("tool", "param"),
    [
        ({"type": "function"}, "tools[0].name"),
        ({"type": "function", "name": "f", "parameters": "{}"}, "tools[0].parameters"),
        ({"type": "function", "name": "f", "strict": "yes"}, "tools[0].strict"),
        ("f", "tools[0]"),
    ],
)
def test_bad_function_tools_are_refused(tool: Any, param: str) -> None:
    assert refused(input="hi", tools=[tool]).param == param


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "weather"}, {"type": "function", "function": {"name": "weather"}}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    assert chat(input="hi", tools=[WEATHER], tool_choice=choice)["tool_choice"] == expected


def test_a_tool_choice_without_tools() -> None:
    assert "tool_choice" not in chat(input="hi", tool_choice="auto")
    assert refused(input="hi", tool_choice="required").param == "tool_choice"
    assert refused(input="hi", tool_choice={"type": "function", "name": "f"}).param == "tool_choice"


def test_allowed_tools_send_only_the_allowed_tools_with_the_mode_as_choice() -> None:
    other = {"type": "function", "name": "now"}
    choice = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "weather"}]}
    out = chat(input="hi", tools=[WEATHER, other], tool_choice=choice)
    assert out["tools"] == [CHAT_WEATHER]
    assert out["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("choice", "param"),
    [
        ("sometimes", "tool_choice"),
        ({"type": "file_search"}, "tool_choice.type"),
        ({"type": "web_search_preview"}, "tool_choice.type"),
        ({"type": "mcp", "server_label": "x"}, "tool_choice.type"),
        ({"type": "function"}, "tool_choice.name"),
        ({"type": "allowed_tools", "mode": "none", "tools": []}, "tool_choice.mode"),
        ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "mcp"}]}, "tool_choice.tools[0].type"),
        ({"type": "allowed_tools", "mode": "auto", "tools": [{"type": "function", "name": "other"}]},
         "tool_choice.tools[0].name"),
    ],
)  # fmt: skip
def test_bad_tool_choices_are_refused(choice: Any, param: str) -> None:
    assert refused(input="hi", tools=[WEATHER], tool_choice=choice).param == param


# -- text format, sampling, reasoning, logprobs, user, stream -----------------------------------------------

SCHEMA = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True, "description": "d"},
            {
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": SCHEMA, "strict": True, "description": "d"},
            },
        ),
        (
            {"type": "json_schema", "name": "out", "schema": SCHEMA},
            {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA}},
        ),
    ],
)
def test_text_format_becomes_response_format(fmt: dict[str, Any], expected: Any) -> None:
    out = chat(input="hi", text={"format": fmt, "verbosity": "low"})
    assert out.get("response_format") == expected
    assert "text" not in out and "verbosity" not in out


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ("json", "text"),
        ({"format": {"type": "yaml"}}, "text.format.type"),
        ({"format": {"type": "json_schema", "schema": SCHEMA}}, "text.format.name"),
        ({"format": {"type": "json_schema", "name": "x"}}, "text.format.schema"),
        (
            {"format": {"type": "json_schema", "name": "x", "schema": SCHEMA, "strict": 1}},
            "text.format.strict",
        ),
        ({"verbosity": "loud"}, "text.verbosity"),
    ],
)
def test_bad_text_is_refused(text: Any, param: str) -> None:
    assert refused(input="hi", text=text).param == param


def test_sampling_reasoning_and_user_map_to_their_chat_names() -> None:
    out = chat(
        input="hi",
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=300,
        reasoning={"effort": "low", "summary": "auto"},
        safety_identifier="user-7",
        metadata={"team": "search"},
        store=True,
        truncation="auto",
        service_tier="auto",
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        some_future_field={"x": 1},
    )
    assert out == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 300,
        "reasoning_effort": "low",
        "user": "user-7",
    }


def test_logprobs_come_where_include_asks_for_them() -> None:
    out = chat(input="hi", include=["message.output_text.logprobs"], top_logprobs=3)
    assert (out["logprobs"], out["top_logprobs"]) == (True, 3)
    assert "logprobs" not in chat(input="hi", top_logprobs=3)


def test_a_stream_asks_for_the_usage_chunk() -> None:
    out = chat(input="hi", stream=True, stream_options={"include_obfuscation": False})
    assert (out["stream"], out["stream_options"]) == (True, {"include_usage": True})
    assert "stream_options" not in chat(input="hi", stream=False)


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": None}, "model"),
        ({"model": 3}, "model"),
        ({"instructions": ["x"]}, "instructions"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": -0.1}, "top_p"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"max_output_tokens": 10**6}, "max_output_tokens"),
        ({"reasoning": {"effort": "maximal"}}, "reasoning.effort"),
        ({"reasoning": "high"}, "reasoning"),
        ({"parallel_tool_calls": "yes"}, "parallel_tool_calls"),
        ({"include": "message.output_text.logprobs"}, "include"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"user": 7}, "user"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": True}, "stream_options"),
        ({"store": "no"}, "store"),
        ({"metadata": {"n": 1}}, "metadata"),
        ({"truncation": "middle"}, "truncation"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"background": "yes"}, "background"),
    ],
)
def test_bad_parameters_are_refused_naming_them(fields: dict[str, Any], param: str) -> None:
    assert refused(input="hi", **fields).param == param


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"background": True}, "background"),
    ],
)
def test_what_needs_stored_state_is_refused(fields: dict[str, Any], param: str) -> None:
    error = refused(input="hi", **fields)
    assert error.param == param and "stateless" in error.message


def test_store_false_and_background_false_are_served() -> None:
    assert chat(input="hi", store=False, background=False)["messages"] == [{"role": "user", "content": "hi"}]


# -- the bodies the openai SDK sends -------------------------------------------------------


def sdk_body(**params: Any) -> dict[str, Any]:
    """The JSON body `client.responses.create(**params)` sends."""
    sent: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.read())
        return httpx.Response(
            400, json={"error": {"message": "captured", "type": "x", "param": None, "code": None}}
        )

    client = openai.OpenAI(
        api_key="sk-x", base_url="http://router/v1", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError):
        client.responses.create(**params)
    body: dict[str, Any] = orjson.loads(sent[0])
    return body


def test_an_sdk_built_conversation_translates() -> None:
    body = sdk_body(
        model="m",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "20C"},
        ],
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "weather"},
        text={"format": {"type": "json_schema", "name": "out", "schema": SCHEMA, "strict": True}},
        max_output_tokens=100,
        store=False,
        stream=True,
    )
    out = to_chat(body)
    validate(out)
    assert [m["role"] for m in out["messages"]] == ["system", "user", "assistant", "tool"]
    assert out["tools"] == [CHAT_WEATHER]
    assert out["response_format"]["json_schema"]["name"] == "out"
    assert out["max_completion_tokens"] == 100 and out["stream"] is True
