"""Pure: a Responses `input` (a string or a list of items) -> Chat Completions `messages`.

    message items            -> one chat message each (developer -> system, see below)
    function_call items      -> `tool_calls` on one assistant message (consecutive calls together)
    function_call_output     -> a `tool` message
    reasoning items          -> dropped
    item_reference, and the items of built-in tools -> 400 naming the item

Every check names the parameter as the client wrote it (`input[2].content[0].image_url`).
"""

from __future__ import annotations

from typing import Any

from ...types import JSON
from ..fields import fail

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
"""Responses roles -> chat roles. `developer` is the Responses name for instructions; chat
providers know `system` (Trinity documents system/user/assistant/tool only), and OpenAI's own
chat models read the two alike."""

_TEXT_PARTS = frozenset(("input_text", "output_text"))


def to_messages(value: Any) -> list[JSON]:
    if value is None:
        fail("input", "you must provide an input parameter")
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        fail("input", "'input' must be a string or an array of input items")
    messages: list[JSON] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            fail(where, f"'{where}' must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            messages.append(_message(item, where))
        elif kind == "function_call":
            _function_call(item, where, messages)
        elif kind == "function_call_output":
            messages.append(_function_call_output(item, where))
        elif kind == "reasoning":
            # router is stateless and chat upstreams take no reasoning back: a reasoning item is
            # the model's own earlier thinking (or OpenAI's encrypted copy of it), which the
            # next turn does not need to be answered. Dropping it loses nothing the client sent
            # for the model to read.
            continue
        elif kind == "item_reference":
            fail(
                where,
                f"'{where}' is an item_reference: router is stateless and stores no items; "
                "send the item itself in `input`",
            )
        else:
            fail(
                f"{where}.type",
                f"'{where}.type' = {kind!r} is not supported: router is stateless and serves "
                "messages and function tools only",
            )
    return messages


def _message(item: JSON, where: str) -> JSON:
    role = item.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        fail(f"{where}.role", f"'{where}.role' must be one of: assistant, developer, system, user")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": _ROLES[role], "content": content}
    if not isinstance(content, list):
        fail(f"{where}.content", f"'{where}.content' must be a string or an array of content parts")
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_text(content, f"{where}.content")}
    parts = [_part(part, f"{where}.content[{j}]") for j, part in enumerate(content)]
    if role != "user":
        return {"role": "system", "content": _system_text(parts, f"{where}.content")}
    return {"role": "user", "content": parts}


def _assistant_text(content: list[Any], where: str) -> str:
    """An earlier answer, as chat history carries it: one string. Its parts are pieces of one
    answer (OpenAI splits none), so they join with nothing between them."""
    texts = []
    for j, part in enumerate(content):
        kind = _kind(part)
        key = "refusal" if kind == "refusal" else "text"
        if kind not in _TEXT_PARTS and kind != "refusal":
            fail(f"{where}[{j}].type", f"'{where}[{j}].type' must be output_text or refusal")
        text = part.get(key)
        if not isinstance(text, str):
            fail(f"{where}[{j}].{key}", f"'{where}[{j}].{key}' must be a string")
        texts.append(text)
    return "".join(texts)


def _system_text(parts: list[JSON], where: str) -> str | list[JSON]:
    """System text as one string where it is one part (what every provider takes); chat
    system messages carry text only."""
    for j, part in enumerate(parts):
        if part["type"] != "text":
            fail(f"{where}[{j}].type", f"'{where}[{j}].type': system and developer messages take text only")
    return parts[0]["text"] if len(parts) == 1 else parts


def _part(part: Any, where: str) -> JSON:
    """One content part of a user, system or developer message -> its chat part."""
    kind = _kind(part)
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": _string(part, "text", where)}
    if kind == "refusal":
        return {"type": "text", "text": _string(part, "refusal", where)}
    if kind == "input_image":
        return _image(part, where)
    if kind == "input_file":
        return _file(part, where)
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            fail(f"{where}.input_audio", f"'{where}.input_audio' must be an object with data and format")
        return {"type": "input_audio", "input_audio": audio}
    fail(
        f"{where}.type",
        f"'{where}.type' must be one of: input_text, input_image, input_file, input_audio, output_text",
    )


def _image(part: JSON, where: str) -> JSON:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        if part.get("file_id") is not None:
            fail(
                f"{where}.file_id",
                f"'{where}.file_id': router stores no files; send the image as `image_url` "
                "(a URL or a base64 data URL)",
            )
        fail(f"{where}.image_url", f"'{where}.image_url' must be a URL or a base64 data URL")
    image: JSON = {"url": url}
    detail = part.get("detail")
    if detail is not None:
        if not isinstance(detail, str):
            fail(f"{where}.detail", f"'{where}.detail' must be a string")
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _file(part: JSON, where: str) -> JSON:
    data = part.get("file_data")
    if not isinstance(data, str) or not data:
        for name in ("file_id", "file_url"):
            if part.get(name) is not None:
                fail(
                    f"{where}.{name}",
                    f"'{where}.{name}': router stores and fetches no files; send the file's "
                    "content as `file_data`",
                )
        fail(f"{where}.file_data", f"'{where}.file_data' must be the file's content (a base64 data URL)")
    file: JSON = {"file_data": data}
    filename = part.get("filename")
    if filename is not None:
        if not isinstance(filename, str):
            fail(f"{where}.filename", f"'{where}.filename' must be a string")
        file["filename"] = filename
    return {"type": "file", "file": file}


def _function_call(item: JSON, where: str, messages: list[JSON]) -> None:
    """A call the model made earlier. Calls that follow an assistant message (or each other)
    are that message's `tool_calls`: chat answers a turn's parallel calls in one message."""
    call = {
        "id": _string(item, "call_id", where),
        "type": "function",
        "function": {"name": _string(item, "name", where), "arguments": _string(item, "arguments", where)},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if last["content"] == "":
            last["content"] = None  # as chat answers a turn with only calls
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _function_call_output(item: JSON, where: str) -> JSON:
    output = item.get("output")
    if not isinstance(output, str):
        if not isinstance(output, list):
            fail(f"{where}.output", f"'{where}.output' must be a string or an array of input_text parts")
        output = _output_text(output, f"{where}.output")
    return {"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": output}


def _output_text(parts: list[Any], where: str) -> str:
    """A function's output as chat's tool message carries it: text. Its parts are separate
    blocks, so a line break keeps the last word of one from running into the next."""
    texts = []
    for j, part in enumerate(parts):
        if _kind(part) != "input_text":
            fail(
                f"{where}[{j}].type",
                f"'{where}[{j}].type': a function's output upstream is text only (input_text parts)",
            )
        texts.append(_string(part, "text", f"{where}[{j}]"))
    return "\n".join(texts)


def _kind(part: Any) -> str | None:
    kind = part.get("type") if isinstance(part, dict) else None
    return kind if isinstance(kind, str) else None


def _string(obj: JSON, key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        fail(f"{where}.{key}", f"'{where}.{key}' must be a string")
    return value
