"""Pure: a whole `chat.completion` -> an Anthropic `message`.

Its content blocks, in the order Anthropic gives them:
  - `thinking`, when the message has `reasoning_content`. Its `signature` is "": the signature
    is Anthropic's proof that it made the thinking, which no chat provider can give; the SDKs
    take any string, and a client that sends the block back has it dropped (messages.py);
  - `text`, when the message has text (a refusal's text is the answer's text, with
    stop_reason `refusal`);
  - `tool_use`, one per tool call, `input` being the parsed arguments ("" reads as `{}`).

Arguments that are not a JSON object are not passed off as some other input: the answer is
the provider's failure (UpstreamProtocolError), as it is on a stream, where the SDK cannot
parse them either. stop_reason and usage: ending.py.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...errors import UpstreamProtocolError
from ...types import JSON
from ..endpoint import Answering
from .ending import stop_reason, usage

MESSAGE_ID_PREFIX = "msg_"
TOOL_ID_PREFIX = "toolu_"
"""For a tool call whose provider gave it no id: Anthropic's prefix, the answer's id, its index."""


def to_message(upstream: JSON, answering: Answering) -> JSON:
    choices = upstream.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
    message = choice.get("message")
    message = message if isinstance(message, dict) else {}
    content: list[JSON] = []
    reasoning = message.get("reasoning_content")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = _text(message.get("content"))
    refusal = message.get("refusal")
    refused = isinstance(refusal, str) and bool(refusal)
    if isinstance(refusal, str):
        text += refusal
    if text:
        content.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for index, call in enumerate(calls if isinstance(calls, list) else ()):
        content.append(tool_use(call, answering.answer_id, index))
    reason, sequence = stop_reason(
        choice.get("finish_reason"), choice.get("stop_reason"), answering.request, tool_calls=bool(calls)
    )
    if refused:
        reason, sequence = "refusal", None
    return {
        "id": MESSAGE_ID_PREFIX + answering.answer_id,
        "type": "message",
        "role": "assistant",
        "model": upstream.get("model") or answering.request.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(upstream.get("usage")),
    }


def tool_use(call: Any, answer_id: str, index: int) -> JSON:
    function = call.get("function") if isinstance(call, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise UpstreamProtocolError("the provider answered a tool call without a name")
    assert isinstance(function, dict)
    call_id = call.get("id")
    return {
        "type": "tool_use",
        "id": call_id if isinstance(call_id, str) and call_id else f"{TOOL_ID_PREFIX}{answer_id}_{index}",
        "name": name,
        "input": tool_input(function.get("arguments"), name),
    }


def tool_input(arguments: Any, name: str) -> JSON:
    """A tool call's arguments as Anthropic's `input` object."""
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):  # a provider that sends the object, not its JSON text
        return arguments
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) else None
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise UpstreamProtocolError(
            f"the provider answered a call of tool {name!r} whose arguments are not a JSON object"
        )
    return parsed


def _text(content: Any) -> str:
    """The message's text: a string, or (from some providers) text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
