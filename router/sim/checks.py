"""Pure: a simulated provider's 400 for what its document says it does not take.

Capabilities (dialects.FEATURES) are refused by the same table router routes by: a
simulator that silently accepted tools, images or n > 1 its provider does not document
would hide a routing bug behind a 200.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson

from .dialects import Dialect, error_type

# Content part type -> the capability it needs (the part types of trinity's Part table).
PART_FEATURES: Mapping[str, str] = MappingProxyType(
    {"image_url": "image", "input_audio": "audio", "file": "file"}
)
DEFAULT_ROLES = ("assistant", "system", "user")


@dataclass(frozen=True)
class Rejection:
    status: int
    code: str
    message: str
    param: str | None = None

    def body(self) -> bytes:
        return error_body(self.status, self.code, self.message, self.param)


def error_body(status: int, code: str, message: str, param: str | None = None) -> bytes:
    return orjson.dumps(
        {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    )


def check(dialect: Dialect, body: Any) -> Rejection | None:
    """The provider's 400 for what its document says it does not take; None if acceptable."""
    if not isinstance(body, dict):
        return Rejection(400, "invalid_request_error", "request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return Rejection(400, "invalid_request_error", "model is required", "model")
    if model not in dialect.models:
        status, code, template = dialect.unknown_model
        return Rejection(status, code, template.format(model=model), "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return Rejection(400, "invalid_request_error", "messages is required", "messages")
    return (
        _model_rules(dialect, model, body)
        or _messages(dialect, model, messages)
        or _params(dialect, body)
        or _features(dialect, model, body)
    )


def _model_rules(dialect: Dialect, model: str, body: dict[str, Any]) -> Rejection | None:
    rules = dialect.models[model]
    for name in sorted(rules.rejects):
        if name in body:
            return Rejection(
                400, "invalid_request_error", f"model {model} does not support parameter {name}", name
            )
    for name, allowed in rules.allowed.items():
        if name in body and not any(
            body[name] == a and isinstance(a, bool) == isinstance(body[name], bool) for a in allowed
        ):
            return Rejection(
                400, "invalid_request_error", f"model {model} does not support {name}={body[name]!r}", name
            )
    return None


def _messages(dialect: Dialect, model: str, messages: list[Any]) -> Rejection | None:
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return Rejection(400, "invalid_request_error", f"messages[{i}] must be an object", "messages")
        role = message.get("role")
        if dialect.roles is not None and role not in dialect.roles:
            return Rejection(
                400,
                "invalid_request_error",
                f"messages[{i}].role {role!r} is not supported; use one of "
                + ", ".join(sorted(dialect.roles)),
                f"messages[{i}].role",
            )
        if role == "tool" and not dialect.supports(model, "tool_role"):
            roles = sorted(dialect.roles - {"tool"}) if dialect.roles is not None else DEFAULT_ROLES
            return Rejection(  # worded as the roles check above, which chenyu's documents call for
                400,
                "invalid_request_error",
                f"messages[{i}].role 'tool' is not supported; use one of " + ", ".join(roles),
                f"messages[{i}].role",
            )
        if role == "tool" and not message.get("tool_call_id"):
            return Rejection(
                400,
                "invalid_request_error",
                f"messages[{i}]: tool_call_id is required for role tool",
                f"messages[{i}].tool_call_id",
            )
        if message.get("tool_calls") is not None and role != "assistant":
            return Rejection(
                400,
                "invalid_request_error",
                f"messages[{i}]: tool_calls only on role assistant",
                f"messages[{i}].tool_calls",
            )
        content = message.get("content")
        if dialect.part_types is not None and isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in dialect.part_types:
                    return Rejection(
                        400,
                        "invalid_request_error",
                        f"messages[{i}]: unsupported part type {kind!r}",
                        f"messages[{i}].content",
                    )
        for j, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type") if isinstance(part, dict) else None
            feature = PART_FEATURES.get(kind) if isinstance(kind, str) else None
            if feature is not None and not dialect.supports(model, feature):
                return Rejection(
                    400,
                    "invalid_request_error",
                    f"model {model} does not support {feature} input (content part type {kind!r})",
                    f"messages[{i}].content[{j}].type",
                )
    return None


def _params(dialect: Dialect, body: dict[str, Any]) -> Rejection | None:
    for first, second in dialect.exclusive:
        if body.get(first) is not None and body.get(second) is not None:
            return Rejection(
                400, "invalid_request_error", f"{first} and {second} are mutually exclusive", second
            )
    for name, (lo, hi) in dialect.ranges.items():
        value = body.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi
        ):
            return Rejection(400, "invalid_request_error", f"{name} must be between {lo} and {hi}", name)
    stop = body.get("stop")
    if dialect.max_stop is not None and isinstance(stop, list) and len(stop) > dialect.max_stop:
        return Rejection(
            400, "invalid_request_error", f"stop takes at most {dialect.max_stop} sequences", "stop"
        )
    for name, needed in dialect.requires.items():
        if body.get(name) is not None and body.get(needed) is not True:
            return Rejection(400, "invalid_request_error", f"{name} requires {needed}=true", name)
    for name in dialect.stream_only:
        if body.get(name) is not None and not body.get("stream"):
            return Rejection(400, "invalid_request_error", f"{name} is only allowed with stream=true", name)
    return None


def _features(dialect: Dialect, model: str, body: dict[str, Any]) -> Rejection | None:
    """Request parameters that need a capability: the feature, the param a refusal names."""
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    n = body.get("n")
    used = (
        ("tools", "tools", bool(body.get("tools")), "tools"),
        ("json_object", "response_format", kind == "json_object", "response_format type 'json_object'"),
        ("json_schema", "response_format", kind == "json_schema", "response_format type 'json_schema'"),
        ("logprobs", "logprobs", body.get("logprobs") is True, "logprobs"),
        ("n", "n", isinstance(n, int) and not isinstance(n, bool) and n > 1, "n > 1"),
    )
    for feature, param, uses, what in used:
        if uses and not dialect.supports(model, feature):
            return Rejection(400, "invalid_request_error", f"model {model} does not support {what}", param)
    return None
