"""Pure: Responses `tools` and `tool_choice` -> their Chat Completions forms.

router serves function tools only. The built-in tools (web search, file search, code
interpreter, computer use, image generation, MCP, shell, custom ...) run on OpenAI's side
with state router does not have; a request naming one is refused, not served without it.
"""

from __future__ import annotations

from typing import Any

from ...types import JSON
from ..fields import fail

_MODES = ("auto", "none", "required")


def to_chat_tools(tools: Any) -> list[JSON]:
    if not isinstance(tools, list):
        fail("tools", "'tools' must be an array of tools")
    return [_function(tool, f"tools[{i}]") for i, tool in enumerate(tools)]


def _function(tool: Any, where: str) -> JSON:
    if not isinstance(tool, dict):
        fail(where, f"'{where}' must be an object")
    kind = tool.get("type")
    if kind != "function":
        fail(
            f"{where}.type",
            f"'{where}.type' = {kind!r} is not supported: router is stateless and serves only "
            "function tools (type 'function')",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        fail(f"{where}.name", f"'{where}.name' must be a non-empty string")
    function: JSON = {"name": name}
    for key, kinds, what in (
        ("description", str, "a string"),
        ("parameters", dict, "an object (a JSON schema)"),
        ("strict", bool, "a boolean"),
    ):
        value = tool.get(key)
        if value is None:
            continue
        if not isinstance(value, kinds):
            fail(f"{where}.{key}", f"'{where}.{key}' must be {what}")
        function[key] = value
    return {"type": "function", "function": function}


def to_chat_tool_choice(choice: Any, tools: list[JSON]) -> tuple[Any, list[JSON]]:
    """The chat `tool_choice`, and the tools the model may call.

    `allowed_tools` has no chat form that providers take; its meaning is kept by sending only
    the allowed tools, with its mode as the choice.
    """
    if isinstance(choice, str):
        if choice not in _MODES:
            fail("tool_choice", f"'tool_choice' must be one of: {', '.join(_MODES)}, or an object")
        return choice, tools
    if not isinstance(choice, dict):
        fail("tool_choice", "'tool_choice' must be a string or an object")
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            fail("tool_choice.name", "'tool_choice.name' must be the name of a function tool")
        return {"type": "function", "function": {"name": name}}, tools
    if kind == "allowed_tools":
        return _allowed(choice, tools)
    fail(
        "tool_choice.type",
        f"'tool_choice.type' = {kind!r} is not supported: router serves only function tools "
        "('function' or 'allowed_tools' choices)",
    )


def _allowed(choice: JSON, tools: list[JSON]) -> tuple[Any, list[JSON]]:
    mode = choice.get("mode")
    if mode not in ("auto", "required"):
        fail("tool_choice.mode", "'tool_choice.mode' must be 'auto' or 'required'")
    allowed = choice.get("tools")
    if not isinstance(allowed, list):
        fail("tool_choice.tools", "'tool_choice.tools' must be an array of tools")
    if not allowed:
        fail("tool_choice.tools", "'tool_choice.tools' must name at least one tool")
    offered = {tool["function"]["name"] for tool in tools}
    names = set()
    for i, tool in enumerate(allowed):
        where = f"tool_choice.tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            fail(f"{where}.type", f"'{where}.type' must be 'function': router serves only function tools")
        name = tool.get("name")
        if not isinstance(name, str) or name not in offered:
            fail(f"{where}.name", f"'{where}.name' must name a function in 'tools'")
        names.add(name)
    return mode, [tool for tool in tools if tool["function"]["name"] in names]
