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


# -- embeddings and rerank: OpenAI's bounds, the only ones a provider of them is known to keep --

MAX_INPUTS = 2048
MAX_DIMENSIONS = 3072  # OpenAI's largest embedding model; keeps a simulator's answers bounded
MAX_DOCUMENTS = 1000


def check_embeddings(dialect: Dialect, body: Any) -> Rejection | None:
    """The provider's 400 for an embeddings request; None if acceptable."""
    rejection = _rag_model(dialect, body, dialect.embedding_models, "embeddings")
    if rejection is not None:
        return rejection
    rejection = _embedding_input(body.get("input"))
    if rejection is not None:
        return rejection
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _invalid("encoding_format must be float or base64", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and not (
        isinstance(dimensions, int) and not isinstance(dimensions, bool) and 1 <= dimensions <= MAX_DIMENSIONS
    ):
        return _invalid(f"dimensions must be between 1 and {MAX_DIMENSIONS}", "dimensions")
    return None


def _embedding_input(value: Any) -> Rejection | None:
    """A non-empty string, one token array, or up to MAX_INPUTS of either, as OpenAI takes."""
    if isinstance(value, str):
        return None if value else _invalid("input cannot be an empty string", "input")
    if not isinstance(value, list) or not value:
        return _invalid("input must be a non-empty string or array", "input")
    if all(map(_token, value)):  # one token array: its length is the model's limit, not this one
        return None
    if len(value) > MAX_INPUTS:
        return _invalid(f"input takes at most {MAX_INPUTS} items", "input")
    texts = isinstance(value[0], str)  # a list of strings or of token arrays, not both
    for i, item in enumerate(value):
        fits = isinstance(item, str) if texts else isinstance(item, list) and all(map(_token, item))
        if not fits or not item:
            return _invalid(f"input[{i}] must be a non-empty string or token array", f"input[{i}]")
    return None


def check_rerank(dialect: Dialect, body: Any) -> Rejection | None:
    """The provider's 400 for a rerank request; None if acceptable. Documents are strings only:
    router sends them so, and a `{"text": ...}` object arriving would show it did not."""
    rejection = _rag_model(dialect, body, dialect.rerank_models, "rerank")
    if rejection is not None:
        return rejection
    query = body.get("query")
    if not isinstance(query, str) or not query:
        return _invalid("query must be a non-empty string", "query")
    documents = body.get("documents")
    if not isinstance(documents, list) or not documents or len(documents) > MAX_DOCUMENTS:
        return _invalid(f"documents must be an array of 1 to {MAX_DOCUMENTS} strings", "documents")
    for i, document in enumerate(documents):
        if not isinstance(document, str):
            return _invalid(f"documents[{i}] must be a string", f"documents[{i}]")
    top_n = body.get("top_n")
    if top_n is not None and not (isinstance(top_n, int) and not isinstance(top_n, bool) and top_n >= 1):
        return _invalid("top_n must be a whole number of at least 1", "top_n")
    if body.get("return_documents") is not None and not isinstance(body["return_documents"], bool):
        return _invalid("return_documents must be a boolean", "return_documents")
    return None


def _rag_model(dialect: Dialect, body: Any, served: frozenset[str], what: str) -> Rejection | None:
    """The body is an object naming a model served here, and asks for no stream.

    A model this provider serves for another purpose (a chat model on /embeddings) gets a 400,
    as OpenAI answers one: the model exists, the request does not fit it. A model served
    nowhere here gets the dialect's unknown-model answer."""
    if not isinstance(body, dict):
        return _invalid("request body must be a JSON object", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return _invalid("model is required", "model")
    if model not in served:
        known = model in dialect.models or model in dialect.embedding_models or model in dialect.rerank_models
        if known:
            return _invalid(f"model {model} does not support {what}", "model")
        status, code, template = dialect.unknown_model
        return Rejection(status, code, template.format(model=model), "model")
    if "stream" in body:
        return _invalid(f"{what} answers are not streamed", "stream")
    return None


def _token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _invalid(message: str, param: str | None) -> Rejection:
    return Rejection(400, "invalid_request_error", message, param)
