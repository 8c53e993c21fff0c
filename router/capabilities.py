"""Pure: which features a chat request uses, and which targets can serve them all.

A provider (or one of its models) declares in providers.yaml what it accepts (`accepts`),
from its document. A request goes only to targets that accept every feature it uses, on
the first attempt and on failover alike; when no target of the model can, the client gets
a 400 naming the parameter before anything is sent upstream.

    needs(body)               -> {feature: the parameter that uses it}
    serving(targets, body)    -> the targets that can serve the body, or ParamNotAllowed
"""

from __future__ import annotations

from typing import Any

from .config import FEATURES, Target
from .errors import ParamNotAllowed
from .types import JSON

_PART_FEATURES = {"image_url": "image", "input_audio": "audio", "file": "file"}
_WHAT = {
    "tools": "tools (function calling)",
    "tool_role": "messages with role 'tool'",
    "image": "image content parts",
    "audio": "audio content parts",
    "file": "file content parts",
    "json_object": "response_format json_object",
    "json_schema": "response_format json_schema",
    "logprobs": "logprobs",
    "n": "n > 1",
    "top_k": "top_k",
}
assert set(_WHAT) == set(FEATURES), "every feature has its words"


def needs(body: JSON) -> dict[str, str]:
    """Each feature `body` uses, with the first parameter that uses it (for the 400's `param`)."""
    found: dict[str, str] = {}
    if body.get("tools"):
        found["tools"] = "tools"
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    if kind in ("json_object", "json_schema"):
        found[kind] = "response_format"
    if body.get("logprobs") is True:
        found["logprobs"] = "logprobs"
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        found["n"] = "n"
    if body.get("top_k") is not None:  # not OpenAI's: only where a provider documents it
        found["top_k"] = "top_k"
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if isinstance(message, dict):
                _message_needs(i, message, found)
    return found


def _message_needs(i: int, message: dict[str, Any], found: dict[str, str]) -> None:
    if message.get("role") == "tool":
        found.setdefault("tool_role", f"messages[{i}].role")
    content = message.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            feature = _PART_FEATURES.get(kind) if isinstance(kind, str) else None
            if feature is not None:
                found.setdefault(feature, f"messages[{i}].content[{j}].type")


def serving(targets: tuple[Target, ...], body: JSON) -> tuple[Target, ...]:
    """The targets that accept every feature `body` uses (all of them for a plain request).

    Raises ParamNotAllowed naming the parameter when none can: the feature that the most
    targets lack decides which parameter the client is told about.
    """
    used = needs(body)
    if not used:
        return targets
    able = tuple(t for t in targets if all(_accepts(t, feature) for feature in used))
    if able:
        return able
    lacking: dict[str, int] = {}
    for t in targets:
        for feature in used:
            if not _accepts(t, feature):
                lacking[feature] = lacking.get(feature, 0) + 1
    feature = max(lacking, key=lambda f: (lacking[f], -FEATURES.index(f)))
    model = targets[0].route.name
    param = used[feature]
    raise ParamNotAllowed(
        f"No provider of '{model}' accepts {_WHAT[feature]} (parameter '{param}').", param=param
    )


def _accepts(target: Target, feature: str) -> bool:
    accepts = target.route.accepts
    return accepts is None or feature in accepts
