"""Pure: an Anthropic Messages create body -> the Chat Completions body every attempt sends.

    model                          model
    max_tokens (required)          max_completion_tokens (at most validate.MAX_COMPLETION_TOKENS)
    system, messages               messages (messages.py)
    tools (client tools)           function tools, `parameters` = input_schema
    tool_choice                    auto -> "auto", any -> "required", tool -> that function, none -> "none";
                                   disable_parallel_tool_use -> parallel_tool_calls: false
    stop_sequences                 stop (at most validate.MAX_STOP_SEQUENCES, the providers' bound)
    temperature (0..1), top_p, top_k
                                   the same names; whether a provider takes top_k is routing's call
    metadata.user_id               user
    stream                         stream, with stream_options.include_usage: the usage the client's
                                   final message_delta reports
    thinking                       trinity's thinking_enabled, and reasoning_effort from budget_tokens
                                   (EFFORT_BY_BUDGET)
    output_config.format           response_format json_schema (structured output must not be lost)
    output_config.effort           reasoning_effort (xhigh and max read as chat's top, high)

What router cannot honour is refused, naming the parameter: server tools (web search, bash,
code execution ...: router serves client tools only), `container`, `mcp_servers`,
`inference_geo` (router does not choose providers by region) and a `service_tier` other
than the default. Fields not named here are dropped, never sent upstream: newer SDKs add
fields, and a chat provider must not receive Anthropic's.
"""

from __future__ import annotations

from typing import Any

from ...types import JSON
from ...validate import MAX_COMPLETION_TOKENS, MAX_STOP_SEQUENCES
from ..fields import is_int
from .messages import chat_messages, fail, system_message

EFFORT_BY_BUDGET = ((2048, "low"), (8192, "medium"))
"""A thinking budget below each bound reads as that effort; at or above the last, "high".
Anthropic's smallest budget is 1024; Claude Code asks ~4k to "think" and ~32k to "ultrathink"."""

_EFFORT_BY_ANTHROPIC = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_SERVICE_TIERS = frozenset(("auto", "standard_only"))
"""Both mean "no priority capacity", which is all router has."""


def to_chat(body: JSON, *, require_max_tokens: bool = True) -> JSON:
    """The chat body for an Anthropic body. Raises InvalidRequest naming the Anthropic parameter.
    `require_max_tokens=False` serves count_tokens, whose body has no max_tokens."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise fail(
            "model", "you must provide a model parameter" if model is None else "'model' must be a string"
        )
    _refuse_unservable(body)
    messages = chat_messages(body.get("messages"))
    system = system_message(body.get("system"))
    chat: JSON = {"model": model, "messages": [system, *messages] if system else messages}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None or require_max_tokens:
        chat["max_completion_tokens"] = _max_tokens(max_tokens)
    _sampling(body, chat)
    _tools(body, chat)
    _thinking(body.get("thinking"), chat)
    _output_config(body.get("output_config"), chat)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise fail("metadata", "'metadata' must be an object")
        user = metadata.get("user_id")
        if user is not None and not isinstance(user, str):
            raise fail("metadata.user_id", "'metadata.user_id' must be a string")
        if user:
            chat["user"] = user
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise fail("stream", "'stream' must be a boolean")
    if stream:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return chat


def _refuse_unservable(body: JSON) -> None:
    tier = body.get("service_tier")
    if tier is not None and (not isinstance(tier, str) or tier not in _SERVICE_TIERS):
        raise fail("service_tier", "'service_tier' must be 'auto' or 'standard_only'")
    if body.get("container") is not None:
        raise fail("container", "'container' is not supported: router serves no code execution containers")
    if body.get("mcp_servers"):
        raise fail("mcp_servers", "'mcp_servers' is not supported: router serves client tools only")
    if body.get("inference_geo") is not None:
        raise fail(
            "inference_geo", "'inference_geo' is not supported: router cannot choose where a model runs"
        )


def _max_tokens(value: Any) -> int:
    if value is None:
        raise fail("max_tokens", "you must provide a max_tokens parameter")
    if not is_int(value) or not 1 <= value <= MAX_COMPLETION_TOKENS:
        raise fail("max_tokens", f"'max_tokens' must be a whole number from 1 to {MAX_COMPLETION_TOKENS}")
    return value


def _sampling(body: JSON, chat: JSON) -> None:
    for name, top in (("temperature", 1), ("top_p", 1)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= top:
            raise fail(name, f"'{name}' must be a number from 0 to {top}")
        chat[name] = value
    top_k = body.get("top_k")
    if top_k is not None:
        if not is_int(top_k) or top_k < 0:
            raise fail("top_k", "'top_k' must be a whole number of at least 0")
        chat["top_k"] = top_k
    stop = body.get("stop_sequences")
    if stop is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise fail("stop_sequences", "'stop_sequences' must be an array of non-empty strings")
        if len(stop) > MAX_STOP_SEQUENCES:
            raise fail(
                "stop_sequences",
                f"'stop_sequences' may hold at most {MAX_STOP_SEQUENCES} sequences (the providers' bound)",
            )
        if stop:
            chat["stop"] = list(stop)


def _tools(body: JSON, chat: JSON) -> None:
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise fail("tools", "'tools' must be an array")
    functions = [_function(tool, f"tools[{i}]") for i, tool in enumerate(tools or ())]
    if functions:
        chat["tools"] = functions
    choice = body.get("tool_choice")
    if choice is None:
        return
    if not isinstance(choice, dict):
        raise fail("tool_choice", "'tool_choice' must be an object")
    kind = choice.get("type")
    if kind == "none":
        if functions:
            chat["tool_choice"] = "none"
        return
    if kind not in ("auto", "any", "tool"):
        raise fail("tool_choice.type", "'tool_choice.type' must be one of: auto, any, tool, none")
    if not functions:
        if kind == "auto":
            return
        raise fail("tool_choice", f"'tool_choice' of type {kind!r} needs 'tools'")
    if kind == "tool":
        name = choice.get("name")
        if not any(f["function"]["name"] == name for f in functions):
            raise fail("tool_choice.name", "'tool_choice.name' must name one of 'tools'")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        chat["tool_choice"] = "auto" if kind == "auto" else "required"
    no_parallel = choice.get("disable_parallel_tool_use")
    if no_parallel is not None and not isinstance(no_parallel, bool):
        raise fail("tool_choice.disable_parallel_tool_use", "'disable_parallel_tool_use' must be a boolean")
    if no_parallel:
        chat["parallel_tool_calls"] = False


def _function(tool: Any, at: str) -> JSON:
    if not isinstance(tool, dict):
        raise fail(at, f"'{at}' must be an object")
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise fail(
            f"{at}.type",
            f"'{at}.type' {kind!r} is a server tool, which router does not run: it serves client tools only",
        )
    name, schema, description = tool.get("name"), tool.get("input_schema"), tool.get("description")
    if not isinstance(name, str) or not name:
        raise fail(f"{at}.name", f"'{at}.name' must be a string")
    if not isinstance(schema, dict):
        raise fail(f"{at}.input_schema", f"'{at}.input_schema' must be an object (a JSON schema)")
    function: JSON = {"name": name, "parameters": schema}
    if description is not None:
        if not isinstance(description, str):
            raise fail(f"{at}.description", f"'{at}.description' must be a string")
        function["description"] = description
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _thinking(thinking: Any, chat: JSON) -> None:
    if thinking is None:
        return
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "disabled":
        chat["thinking_enabled"] = False
    elif kind == "adaptive":
        chat["thinking_enabled"] = True
    elif kind == "enabled":
        assert isinstance(thinking, dict)
        budget = thinking.get("budget_tokens")
        if not is_int(budget) or budget < 1:
            raise fail(
                "thinking.budget_tokens", "'thinking.budget_tokens' must be a whole number of at least 1"
            )
        chat["thinking_enabled"] = True
        chat["reasoning_effort"] = next((e for bound, e in EFFORT_BY_BUDGET if budget < bound), "high")
    else:
        raise fail("thinking.type", "'thinking.type' must be one of: enabled, disabled, adaptive")


def _output_config(config: Any, chat: JSON) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise fail("output_config", "'output_config' must be an object")
    effort = config.get("effort")
    if effort is not None:
        if not isinstance(effort, str) or effort not in _EFFORT_BY_ANTHROPIC:
            raise fail(
                "output_config.effort", "'output_config.effort' must be one of: low, medium, high, xhigh, max"
            )
        chat["reasoning_effort"] = _EFFORT_BY_ANTHROPIC[effort]
    form = config.get("format")
    if form is None:
        return
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        raise fail("output_config.format.type", "'output_config.format.type' must be 'json_schema'")
    schema = form.get("schema")
    if not isinstance(schema, dict):
        raise fail("output_config.format.schema", "'output_config.format.schema' must be an object")
    chat["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
