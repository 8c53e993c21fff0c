"""anthropic_messages request: an Anthropic Messages body -> the Chat Completions body. Pure, no I/O.
Tools, thinking and count_tokens: test_anthropic_messages_tools.py.

Every body that translates is also checked by validate.py, the chat endpoint's own rules:
what goes upstream is a chat request router would have taken from a chat client.
"""

from __future__ import annotations

from typing import Any

import pytest

from router.api.anthropic_messages import ENDPOINT
from router.api.anthropic_messages.messages import TOOL_ERROR_PREFIX
from router.api.anthropic_messages.request import to_chat
from router.errors import InvalidRequest
from router.validate import validate


def body(*messages: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "model": "claude-x",
        "max_tokens": 256,
        "messages": list(messages) or [{"role": "user", "content": "hi"}],
        **fields,
    }


def chat(**fields: Any) -> dict[str, Any]:
    out = to_chat(body(**fields))
    validate(out)
    return out


def chat_messages(*messages: dict[str, Any], **fields: Any) -> list[dict[str, Any]]:
    out = to_chat(body(*messages, **fields))
    validate(out)
    messages_out: list[dict[str, Any]] = out["messages"]
    return messages_out


def refused(param: str, *messages: dict[str, Any], **fields: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body(*messages, **fields))
    assert caught.value.param == param, caught.value.message
    return caught.value


def user(*blocks: Any) -> dict[str, Any]:
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


def tool_use(id: str, name: str, input: Any) -> dict[str, Any]:
    return {"type": "tool_use", "id": id, "name": name, "input": input}


def tool_result(id: str, content: Any = None, **extra: Any) -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": id, **extra}
    if content is not None:
        block["content"] = content
    return block


# -- the endpoint --------------------------------------------------------------


def test_the_endpoint_is_a_chat_endpoint_that_translates_every_way() -> None:
    assert (ENDPOINT.name, ENDPOINT.kind, ENDPOINT.upstream_path) == ("messages", "chat", "/chat/completions")
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    assert ENDPOINT.request(body) == to_chat(body)
    # The chat body is then held to chat's own rules: an empty conversation never goes upstream.
    with pytest.raises(InvalidRequest) as empty:
        ENDPOINT.request({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": []}]})
    assert empty.value.param is not None and empty.value.param.startswith("messages")
    assert ENDPOINT.answer is not None and ENDPOINT.stream is not None
    assert ENDPOINT.api_key_header == b"x-api-key"


# -- top-level parameters --------------------------------------------------------


def test_a_minimal_body() -> None:
    assert chat() == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 256,
    }


def test_max_tokens_is_required_and_bounded() -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_chat({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.param == "max_tokens"
    for bad in (0, -1, 1.5, True, "10", 65537):
        refused("max_tokens", max_tokens=bad)
    assert chat(max_tokens=65536)["max_completion_tokens"] == 65536


def test_model_is_required() -> None:
    refused("model", model=None)
    refused("model", model=3)


def test_sampling_parameters_pass_in_anthropic_ranges() -> None:
    out = chat(temperature=0.7, top_p=0.9, top_k=40, stop_sequences=["\n\nHuman:", "END"])
    assert (out["temperature"], out["top_p"], out["top_k"], out["stop"]) == (
        0.7,
        0.9,
        40,
        ["\n\nHuman:", "END"],
    )
    refused("temperature", temperature=1.5)  # Anthropic's range is 0..1, chat's 0..2
    refused("temperature", temperature=True)
    refused("top_p", top_p=-0.1)
    refused("top_k", top_k=-1)
    refused("top_k", top_k=2.5)


def test_stop_sequences_within_the_providers_bound() -> None:
    refused("stop_sequences", stop_sequences=["a", "b", "c", "d", "e"])
    refused("stop_sequences", stop_sequences="END")
    refused("stop_sequences", stop_sequences=[""])
    assert "stop" not in chat(stop_sequences=[])


def test_metadata_user_id_becomes_user() -> None:
    assert chat(metadata={"user_id": "u-1"})["user"] == "u-1"
    assert "user" not in chat(metadata={"user_id": None})
    refused("metadata", metadata="u-1")
    refused("metadata.user_id", metadata={"user_id": 7})


def test_a_stream_asks_for_usage() -> None:
    out = chat(stream=True)
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}
    assert "stream" not in chat(stream=False) and "stream_options" not in chat(stream=False)
    refused("stream", stream="yes")


def test_unknown_fields_are_dropped_never_sent_upstream() -> None:
    out = chat(cache_control={"type": "ephemeral"}, betas=["x"], context_management={}, some_new_field=1)
    assert set(out) == {"model", "messages", "max_completion_tokens"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("service_tier", "priority"),
        ("container", "container_1"),
        ("mcp_servers", [{"type": "url", "url": "https://mcp.example", "name": "x"}]),
        ("inference_geo", "us"),
    ],
)
def test_what_router_cannot_honour_is_refused(field: str, value: Any) -> None:
    refused(field, **{field: value})


def test_the_default_service_tiers_are_honoured() -> None:
    for tier in ("auto", "standard_only"):
        assert "service_tier" not in chat(service_tier=tier)
    assert "mcp_servers" not in chat(mcp_servers=[])


# -- system ------------------------------------------------------------------------


def test_system_as_a_string_leads_the_messages() -> None:
    assert chat(system="be brief")["messages"][0] == {"role": "system", "content": "be brief"}


def test_system_as_text_blocks_is_joined_and_cache_control_ignored() -> None:
    system = [text("one", cache_control={"type": "ephemeral"}), text("two")]
    assert chat(system=system)["messages"][0] == {"role": "system", "content": "one\n\ntwo"}


def test_an_empty_system_adds_no_message() -> None:
    assert chat(system="")["messages"] == [{"role": "user", "content": "hi"}]
    assert chat(system=[])["messages"] == [{"role": "user", "content": "hi"}]


def test_system_must_be_text() -> None:
    refused("system[1].type", system=[text("ok"), {"type": "image"}])
    refused("system", system=3)


# -- messages and their blocks ---------------------------------------------------------------


def test_roles_are_user_and_assistant_only() -> None:
    refused("messages[1].role", {"role": "user", "content": "a"}, {"role": "system", "content": "b"})
    refused("messages", messages=[])
    refused("messages[0]", messages=["hi"])
    refused("messages[0].content", {"role": "user", "content": 7})
    refused("messages[0].content[0]", user({"text": "no type"}))


def test_text_only_messages_are_plain_strings() -> None:
    assert chat_messages(user(text("hello")), {"role": "assistant", "content": "hi there"}) == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there"},
    ]


def test_several_text_blocks_keep_their_boundaries_as_parts() -> None:
    assert chat_messages(user(text("a"), text("b"))) == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_images_become_image_url_parts() -> None:
    base64 = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}}
    url = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
    [message] = chat_messages(user(text("what is this?"), base64, url))
    assert message["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]


def test_an_image_needs_a_source_router_can_send() -> None:
    file_source = {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
    refused("messages[0].content[1].source.type", user(text("x"), file_source))
    no_data = {"type": "image", "source": {"type": "base64", "media_type": "image/png"}}
    refused("messages[0].content[0].source.data", user(no_data))
    no_media = {"type": "image", "source": {"type": "base64", "data": "AAAA"}}
    refused("messages[0].content[0].source.media_type", user(no_media))
    refused("messages[0].content[0].source", user({"type": "image"}))


def test_tool_use_becomes_the_assistant_messages_tool_calls() -> None:
    turn = assistant(text("let me look"), tool_use("toolu_1", "search", {"q": "weather", "n": 2}))
    messages = chat_messages(user(text("weather?")), turn, user(tool_result("toolu_1", "sunny")))
    assert messages[1] == {
        "role": "assistant",
        "content": "let me look",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q":"weather","n":2}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"}


def test_an_assistant_turn_of_tool_use_alone_has_no_content() -> None:
    messages = chat_messages(user(text("go")), assistant(tool_use("t1", "run", {})), user(tool_result("t1")))
    assert messages[1]["content"] is None and messages[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert messages[2] == {"role": "tool", "tool_call_id": "t1", "content": ""}


def test_tool_results_come_before_the_rest_of_their_user_turn() -> None:
    turn = user(
        text("here you go"),
        tool_result("t1", "one"),
        tool_result("t2", [text("two"), text("lines")]),
    )
    calls = assistant(tool_use("t1", "a", {}), tool_use("t2", "b", {}))
    messages = chat_messages(user(text("go")), calls, turn)
    assert messages[2:] == [
        {"role": "tool", "tool_call_id": "t1", "content": "one"},
        {"role": "tool", "tool_call_id": "t2", "content": "two\nlines"},
        {"role": "user", "content": "here you go"},
    ]


def test_a_failed_tool_result_says_so_in_its_text() -> None:
    messages = chat_messages(
        user(text("go")), assistant(tool_use("t1", "a", {})), user(tool_result("t1", "boom", is_error=True))
    )
    assert messages[2]["content"] == TOOL_ERROR_PREFIX + "boom"
    refused(
        "messages[2].content[0].is_error",
        user(text("go")),
        assistant(tool_use("t1", "a", {})),
        user(tool_result("t1", "x", is_error="yes")),
    )


def test_an_image_in_a_tool_result_is_refused_by_name() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}}
    refused(
        "messages[2].content[0].content[1].type",
        user(text("go")),
        assistant(tool_use("t1", "a", {})),
        user(tool_result("t1", [text("see"), image])),
    )


def test_tool_blocks_must_be_whole() -> None:
    refused("messages[0].content[0].id", assistant({"type": "tool_use", "name": "a", "input": {}}))
    refused("messages[0].content[0].name", assistant({"type": "tool_use", "id": "t", "input": {}}))
    refused("messages[0].content[0].input", assistant(tool_use("t", "a", "[]")))
    refused("messages[0].content[0].tool_use_id", user({"type": "tool_result", "content": "x"}))
    refused("messages[0].content[0].content", user(tool_result("t", 5)))
    refused("messages[0].content[0].text", user({"type": "text"}))


def test_thinking_in_assistant_history_is_dropped() -> None:
    thought = {"type": "thinking", "thinking": "hmm", "signature": "sig"}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    messages = chat_messages(user(text("q")), assistant(thought, redacted, text("a")), user(text("q2")))
    assert messages[1] == {"role": "assistant", "content": "a"}
    # A turn of thinking alone leaves nothing to send.
    assert chat_messages(user(text("q")), assistant(thought)) == [{"role": "user", "content": "q"}]


@pytest.mark.parametrize(
    ("message", "j"),
    [
        (user({"type": "document", "source": {}}), 0),
        (user(text("x"), {"type": "search_result"}), 1),
        (user({"type": "thinking", "thinking": "x", "signature": ""}), 0),
        (user(tool_use("t", "a", {})), 0),
        (assistant({"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}), 0),
        (assistant(text("x"), {"type": "web_search_tool_result"}), 1),
        (assistant(tool_result("t", "x")), 0),
        (assistant({"type": "image", "source": {"type": "url", "url": "u"}}), 0),
    ],
)
def test_blocks_chat_has_no_place_for_are_refused_by_name(message: dict[str, Any], j: int) -> None:
    error = refused(f"messages[0].content[{j}].type", message)
    assert repr(message["content"][j]["type"]) in error.message


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("service_tier", [], "service_tier"),
        ("service_tier", {"a": 1}, "service_tier"),
        ("output_config", {"effort": ["high"]}, "output_config.effort"),
        ("output_config", {"effort": {}}, "output_config.effort"),
    ],
)
def test_values_of_the_wrong_type_are_the_clients_400_not_a_crash(field: str, value: Any, param: str) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(InvalidRequest) as caught:
        to_chat(body)
    assert caught.value.param == param
