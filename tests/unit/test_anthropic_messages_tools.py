"""anthropic_messages request, the rest: tools, tool_choice, thinking, output_config, and
count_tokens. Every body that translates is also checked by validate.py (`chat`)."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from router.api.anthropic_messages import count_tokens
from router.api.anthropic_messages.request import to_chat
from router.errors import InvalidRequest
from router.limits import PROMPT_CAP, estimate
from tests.unit.test_anthropic_messages import chat, refused

# -- tools ---------------------------------------------------------------------------


WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "cache_control": {"type": "ephemeral"},
}


def test_client_tools_become_function_tools() -> None:
    out = chat(
        tools=[
            WEATHER,
            {"type": "custom", "name": "noop", "input_schema": {"type": "object"}, "strict": True},
        ]
    )
    assert out["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather for a city",
            },
        },
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}, "strict": True}},
    ]


@pytest.mark.parametrize(
    "server_tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"type": "code_execution_20250825", "name": "code_execution"},
    ],
)
def test_server_tools_are_refused_by_name(server_tool: dict[str, Any]) -> None:
    error = refused("tools[1].type", tools=[WEATHER, server_tool])
    assert server_tool["type"] in error.message


def test_a_tool_needs_a_name_and_a_schema() -> None:
    refused("tools[0].name", tools=[{"input_schema": {"type": "object"}}])
    refused("tools[0].input_schema", tools=[{"name": "x"}])
    refused("tools[0].description", tools=[{"name": "x", "input_schema": {}, "description": 1}])
    refused("tools[0]", tools=["x"])
    refused("tools", tools={"name": "x"})


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_forms(choice: dict[str, Any], expected: Any) -> None:
    out = chat(tools=[WEATHER], tool_choice=choice)
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out


def test_disable_parallel_tool_use() -> None:
    out = chat(tools=[WEATHER], tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert out["parallel_tool_calls"] is False
    assert "parallel_tool_calls" not in chat(
        tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": False}
    )


def test_tool_choice_errors() -> None:
    refused("tool_choice.type", tools=[WEATHER], tool_choice={"type": "function"})
    refused("tool_choice.name", tools=[WEATHER], tool_choice={"type": "tool", "name": "other"})
    refused("tool_choice", tool_choice={"type": "any"})  # nothing to choose from
    refused("tool_choice", tools=[WEATHER], tool_choice="auto")


def test_tool_choice_without_tools_that_asks_nothing_is_dropped() -> None:
    assert "tool_choice" not in chat(tool_choice={"type": "auto"})
    assert "tool_choice" not in chat(tool_choice={"type": "none"})


# -- thinking and output config ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "effort"),
    [(1024, "low"), (2047, "low"), (2048, "medium"), (8191, "medium"), (8192, "high"), (32000, "high")],
)
def test_a_thinking_budget_reads_as_an_effort(budget: int, effort: str) -> None:
    out = chat(thinking={"type": "enabled", "budget_tokens": budget})
    assert (out["thinking_enabled"], out["reasoning_effort"]) == (True, effort)


def test_thinking_disabled_and_adaptive() -> None:
    out = chat(thinking={"type": "disabled"})
    assert out["thinking_enabled"] is False and "reasoning_effort" not in out
    out = chat(thinking={"type": "adaptive", "display": "summarized"})
    assert out["thinking_enabled"] is True and "reasoning_effort" not in out


def test_thinking_errors() -> None:
    refused("thinking.type", thinking={"type": "on"})
    refused("thinking.type", thinking=True)
    refused("thinking.budget_tokens", thinking={"type": "enabled"})
    refused("thinking.budget_tokens", thinking={"type": "enabled", "budget_tokens": 0})


def test_output_config() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = chat(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "max"})
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert out["reasoning_effort"] == "high"
    assert chat(output_config={"effort": "low"})["reasoning_effort"] == "low"
    refused("output_config.effort", output_config={"effort": "extreme"})
    refused("output_config.format.type", output_config={"format": {"type": "text"}})
    refused("output_config.format.schema", output_config={"format": {"type": "json_schema"}})


# -- count_tokens ---------------------------------------------------------------------------


def test_count_tokens_is_the_estimate_admission_reserves_for_the_same_body() -> None:
    request = {
        "model": "claude-x",
        "system": "be brief",
        "messages": [{"role": "user", "content": "hello " * 300}],
    }
    raw = orjson.dumps(request)
    counted = count_tokens(request, len(raw))
    translated = to_chat({**request, "max_tokens": 10})
    assert counted == {"input_tokens": estimate(translated, len(raw)).prompt_tokens}
    assert counted == {"input_tokens": math.ceil(len(raw) / 3)}


def test_count_tokens_is_capped_like_the_estimate() -> None:
    huge = "x" * (3 * PROMPT_CAP + 30)
    body = {"model": "m", "messages": [{"role": "user", "content": huge}]}
    assert count_tokens(body, len(orjson.dumps(body))) == {"input_tokens": PROMPT_CAP}


def test_count_tokens_checks_the_body_as_messages_does() -> None:
    with pytest.raises(InvalidRequest) as caught:
        count_tokens({"model": "m", "messages": [{"role": "tool", "content": "x"}]}, 60)
    assert caught.value.param == "messages[0].role"
    with pytest.raises(InvalidRequest) as caught:
        count_tokens({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}, 60)
    assert caught.value.param == "max_tokens"
