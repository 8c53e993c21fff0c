"""Pure: what a simulated provider says to a request — its 400, or a deterministic answer.

Answers depend only on the request and the simulator's settings, so tests can predict
them: the text names the dialect and model, a tool call is made when tools are offered
on a user turn, usage counts words.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .dialects import Dialect, error_type

FILLER = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec"
    " romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


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
    return _model_rules(dialect, model, body) or _messages(dialect, messages) or _params(dialect, body)


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


def _messages(dialect: Dialect, messages: list[Any]) -> Rejection | None:
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


# -- answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    pieces: tuple[str, ...]
    """The content as the stream sends it; empty for a tool call."""
    tool_call: dict[str, Any] | None
    finish_reason: str
    usage: dict[str, int]

    @property
    def content(self) -> str | None:
        return "".join(self.pieces) if self.tool_call is None else None


def answer(dialect: Dialect, body: dict[str, Any], *, chunks: int, call_id: str) -> Answer:
    model = body["model"]
    messages = body["messages"]
    prompt_tokens = _prompt_tokens(messages)
    tools = body.get("tools")
    last_role = messages[-1].get("role")
    if tools and body.get("tool_choice") != "none" and last_role == "user":
        name = _tool_name(body)
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps({"query": "simulated"}).decode()},
        }
        return Answer((), call, "tool_calls", _usage(prompt_tokens, 8))
    if last_role == "tool":
        seen = len(str(messages[-1].get("content") or ""))
        words = f"The tool answered with {seen} characters.".split()
    else:
        words = f"This is a simulated answer from {dialect.name} ({model}).".split()
    missing = max(0, chunks - len(words))  # filler words, cycled: --chunks 200 gives 200 chunks
    words += [FILLER[i % len(FILLER)] for i in range(missing)]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish = words[:limit], "length"
    text = " ".join(words)
    if _wants_json(body):
        text = orjson.dumps({"answer": text}).decode()
    return Answer(_split(text, chunks), None, finish, _usage(prompt_tokens, len(words)))


def _wants_json(body: dict[str, Any]) -> bool:
    fmt = body.get("response_format")
    kind = fmt.get("type") if isinstance(fmt, dict) else fmt
    return kind in ("json_object", "json_schema")


def _tool_name(body: dict[str, Any]) -> str:
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name")
        if isinstance(name, str):
            return name
    tool = body["tools"][0]
    name = tool.get("function", {}).get("name") if isinstance(tool, dict) else None
    return name if isinstance(name, str) else "tool"


def _prompt_tokens(messages: list[Any]) -> int:
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return math.ceil(chars / 4) + 3 * len(messages)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _split(text: str, pieces: int) -> tuple[str, ...]:
    """`text` in `pieces` parts that join back to it exactly, split at spaces where possible."""
    words = text.split(" ")
    if pieces <= 1 or len(words) <= 1:
        return (text,)
    size = math.ceil(len(words) / pieces)
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return tuple(g if i == 0 else " " + g for i, g in enumerate(groups))


def completion(
    dialect: Dialect, body: dict[str, Any], result: Answer, *, completion_id: str, created: int
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": result.content}
    if result.tool_call is not None:
        message["tool_calls"] = [result.tool_call]
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [
                {"index": i, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
                for i in range(_choices(body))
            ],
            "usage": result.usage,
        }
    )


@dataclass(frozen=True)
class StreamPlan:
    head: list[bytes]
    """The role chunk."""
    content: list[bytes]
    """One event per content chunk: what `cut`, `stall` and `malformed` count."""
    tail: list[bytes]
    """The finishing chunk, the usage chunk if any, `[DONE]`."""


def stream(
    dialect: Dialect, body: dict[str, Any], result: Answer, *, completion_id: str, created: int
) -> StreamPlan:
    requested = body.get("stream_options")
    options: dict[str, Any] = requested if isinstance(requested, dict) else {}
    usage_each = dialect.stream_usage == "on_request" and options.get("chunk_include_usage") is True
    usage_last = dialect.stream_usage == "on_request" and options.get("include_usage") is True

    def event(
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        usage: Any = None,
        choices: bool = True,
        index: int = 0,
    ) -> bytes:
        chunk: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk"}
        if dialect.chunk_has_model:
            chunk["created"] = created
            chunk["model"] = body["model"]
        chunk["choices"] = [{"index": index, "delta": delta, "finish_reason": finish}] if choices else []
        if usage is not None:
            chunk["usage"] = usage
        elif usage_each:
            chunk["usage"] = result.usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    head = [event({"role": "assistant", "content": ""})]
    if result.tool_call is not None:
        call = result.tool_call
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        content = [
            event(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            ),
            event({"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]}),
            event({"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]}),
        ]
    else:
        content = _interleaved(result, _choices(body), event)
    final_usage = result.usage if dialect.stream_usage == "final_chunk" else None
    tail = [event({}, result.finish_reason, usage=final_usage, index=_choices(body) - 1)]
    if usage_last:
        tail.append(event({}, usage=result.usage, choices=False))
    tail.append(b"data: [DONE]\n\n")
    return StreamPlan(head, content, tail)


def _choices(body: dict[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


def _interleaved(result: Answer, n: int, event: Callable[..., bytes]) -> list[bytes]:
    """Content events of n choices, round-robin. Choice i gets i extra pieces, so choices
    finish at different times; each but the last finishes inline, right after its text."""
    pieces = [list(result.pieces) + [" more"] * i for i in range(n)]
    events: list[bytes] = []
    for step in range(max(len(p) for p in pieces)):
        for i, own in enumerate(pieces):
            if step < len(own):
                events.append(event({"content": own[step]}, index=i))
                if step == len(own) - 1 and i < n - 1:
                    events.append(event({}, result.finish_reason, index=i))
    return events
