"""Pure: Anthropic `system` and `messages` -> Chat Completions messages.

Anthropic keeps a turn's pieces as typed blocks in one message; chat spreads them over
messages of their own. The mapping:

    system (string, or text blocks)        a leading `system` message (blocks joined by a blank line)
    user / assistant `text`                a text part; a message of one text block is a plain string
    user `image` (base64 or url source)    an `image_url` part (base64 as a data: URL)
    assistant `tool_use`                   an entry of the assistant message's `tool_calls`
    user `tool_result`                     a `tool` message, put before the rest of that user turn:
                                           chat wants tool results right after the tool calls
    assistant `thinking`, `redacted_thinking`
                                           dropped: chat has no place for reasoning in its history,
                                           and the signature that makes it replayable is Anthropic's
    anything else (document, search_result, server tools' blocks ...)
                                           400 naming `messages[i].content[j].type`

`cache_control` on any block is ignored: caching is the provider's business upstream.
"""

from __future__ import annotations

from typing import Any

import orjson

from ...errors import InvalidRequest
from ...types import JSON

TOOL_ERROR_PREFIX = "[tool error] "
"""Put in front of a `tool_result` marked `is_error`: chat's tool message has no such flag,
so the model learns it from the text."""

_DROPPED_ASSISTANT_BLOCKS = frozenset(("thinking", "redacted_thinking"))


def fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=param)


def system_message(system: Any) -> JSON | None:
    """The leading system message, or None when there is no (or an empty) system prompt."""
    if system is None:
        return None
    if isinstance(system, str):
        return {"role": "system", "content": system} if system else None
    if not isinstance(system, list):
        raise fail("system", "'system' must be a string or an array of text blocks")
    texts = []
    for k, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise fail(f"system[{k}].type", f"'system[{k}]' must be a text block")
        texts.append(_text_of(block, f"system[{k}]"))
    joined = "\n\n".join(texts)
    return {"role": "system", "content": joined} if joined else None


def chat_messages(messages: Any) -> list[JSON]:
    """The conversation, as chat messages (the system message is not among them)."""
    if messages is None:
        raise fail("messages", "you must provide a messages parameter")
    if not isinstance(messages, list) or not messages:
        raise fail("messages", "'messages' must be a non-empty array")
    out: list[JSON] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise fail(where, f"'{where}' must be an object")
        role = message.get("role")
        content = message.get("content")
        if role == "user":
            out.extend(_user(content, where))
        elif role == "assistant":
            assistant = _assistant(content, where)
            if assistant is not None:
                out.append(assistant)
        else:
            raise fail(f"{where}.role", f"'{where}.role' must be 'user' or 'assistant'")
    return out


def _blocks(content: Any, where: str) -> list[JSON]:
    """A message's content as blocks: a string is one text block."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise fail(f"{where}.content", f"'{where}.content' must be a string or an array of content blocks")
    for j, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise fail(f"{where}.content[{j}]", f"'{where}.content[{j}]' must be a content block with a type")
    return content


def _user(content: Any, where: str) -> list[JSON]:
    """A user turn: its tool results first (each its own `tool` message), then the rest."""
    results: list[JSON] = []
    parts: list[JSON] = []
    for j, block in enumerate(_blocks(content, where)):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            results.append(_tool_result(block, at))
        else:
            raise _unsupported(kind, at, "user")
    if not parts:
        return results
    return [*results, {"role": "user", "content": _content(parts)}]


def _assistant(content: Any, where: str) -> JSON | None:
    """An assistant turn: its text, and its tool uses as `tool_calls`. None when nothing is left
    (a turn of thinking alone)."""
    parts: list[JSON] = []
    calls: list[JSON] = []
    for j, block in enumerate(_blocks(content, where)):
        at = f"{where}.content[{j}]"
        kind = block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": _text_of(block, at)})
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind not in _DROPPED_ASSISTANT_BLOCKS:
            raise _unsupported(kind, at, "assistant")
    if not parts and not calls:
        return None
    message: JSON = {"role": "assistant", "content": _content(parts) if parts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _content(parts: list[JSON]) -> str | list[JSON]:
    """One text part reads as a plain string, as most chat providers expect; several stay parts,
    so their boundaries are the client's."""
    if len(parts) == 1 and parts[0]["type"] == "text":
        text: str = parts[0]["text"]
        return text
    return parts


def _text_of(block: JSON, at: str) -> str:
    text = block.get("text")
    if not isinstance(text, str):
        raise fail(f"{at}.text", f"'{at}.text' must be a string")
    return text


def _image(block: JSON, at: str) -> JSON:
    source = block.get("source")
    if not isinstance(source, dict):
        raise fail(f"{at}.source", f"'{at}.source' must be an object")
    kind = source.get("type")
    if kind == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not media_type:
            raise fail(f"{at}.source.media_type", f"'{at}.source.media_type' must be a string")
        if not isinstance(data, str) or not data:
            raise fail(f"{at}.source.data", f"'{at}.source.data' must be a base64 string")
        url = f"data:{media_type};base64,{data}"
    elif kind == "url":
        link = source.get("url")
        if not isinstance(link, str) or not link:
            raise fail(f"{at}.source.url", f"'{at}.source.url' must be a string")
        url = link
    else:
        # A `file` source names an upload in Anthropic's Files API, which no provider here has.
        raise fail(f"{at}.source.type", f"'{at}.source.type' must be 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_call(block: JSON, at: str) -> JSON:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id:
        raise fail(f"{at}.id", f"'{at}.id' must be a string")
    if not isinstance(name, str) or not name:
        raise fail(f"{at}.name", f"'{at}.name' must be a string")
    if not isinstance(arguments, dict):
        raise fail(f"{at}.input", f"'{at}.input' must be an object")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
    }


def _tool_result(block: JSON, at: str) -> JSON:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise fail(f"{at}.tool_use_id", f"'{at}.tool_use_id' must be a string")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                # Chat's tool message holds text only: an image (or anything else) has no place there.
                raise fail(
                    f"{at}.content[{k}].type",
                    f"'{at}.content[{k}].type' must be 'text': a tool result is sent on as text only",
                )
            assert isinstance(part, dict)
            texts.append(_text_of(part, f"{at}.content[{k}]"))
        text = "\n".join(texts)
    else:
        raise fail(f"{at}.content", f"'{at}.content' must be a string or an array of text blocks")
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise fail(f"{at}.is_error", f"'{at}.is_error' must be a boolean")
    if is_error:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _unsupported(kind: str, at: str, role: str) -> InvalidRequest:
    allowed = "text, image, tool_result" if role == "user" else "text, tool_use, thinking"
    return fail(
        f"{at}.type",
        f"'{at}.type' {kind!r} is not supported in a {role} message here (router takes: {allowed})",
    )
