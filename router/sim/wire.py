"""Pure: an Answer as its dialect puts it on the wire — one JSON body, or the events of a stream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .answers import Answer, Choice
from .dialects import Dialect


def completion(
    dialect: Dialect, body: dict[str, Any], result: Answer, *, completion_id: str, created: int
) -> bytes:
    rendered = []
    for i, choice in enumerate(result.choices):
        # OpenAI's message shape: `refusal` is always there, null when the model did not refuse.
        message: dict[str, Any] = {"role": "assistant", "content": choice.content, "refusal": None}
        if choice.tool_call is not None:
            message["tool_calls"] = [choice.tool_call]
        rendered.append(
            {
                "index": i,
                "message": message,
                "finish_reason": choice.finish_reason,
                "logprobs": _logprobs(choice),
            }
        )
    return orjson.dumps(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": rendered,
            "usage": result.usage,
        }
    )


def _logprobs(choice: Choice) -> dict[str, Any] | None:
    """None unless asked for (as OpenAI's `"logprobs": null`); a tool call has no content to
    describe, so its content is null too."""
    if choice.logprobs is None:
        return None
    content = [e for piece in choice.logprobs for e in piece] if choice.tool_call is None else None
    return {"content": content, "refusal": None}


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
        logprobs: tuple[dict[str, Any], ...] | None = None,
        no_content_logprobs: bool = False,
    ) -> bytes:
        chunk: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk"}
        if dialect.chunk_has_model:
            chunk["created"] = created
            chunk["model"] = body["model"]
        choice: dict[str, Any] = {"index": index, "delta": delta, "finish_reason": finish}
        if logprobs is not None:  # the logprobs of this chunk's tokens only
            choice["logprobs"] = {"content": list(logprobs), "refusal": None}
        elif no_content_logprobs:  # asked for, but a tool call has no content: as the non-stream answer
            choice["logprobs"] = {"content": None, "refusal": None}
        chunk["choices"] = [choice] if choices else []
        if usage is not None:
            chunk["usage"] = usage
        elif usage_each:
            chunk["usage"] = result.usage
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    head = [event({"role": "assistant", "content": ""})]
    content = _interleaved([_events(c, i, event) for i, c in enumerate(result.choices)], result, event)
    last = len(result.choices) - 1
    final_usage = result.usage if dialect.stream_usage == "final_chunk" else None
    tail = [event({}, result.choices[last].finish_reason, usage=final_usage, index=last)]
    if usage_last:
        tail.append(event({}, usage=result.usage, choices=False))
    tail.append(b"data: [DONE]\n\n")
    return StreamPlan(head, content, tail)


def _events(choice: Choice, index: int, event: Callable[..., bytes]) -> list[bytes]:
    """Choice `index`'s content events: its pieces, or its tool call in three."""
    call = choice.tool_call
    if call is None:
        return [
            event(
                {"content": piece},
                index=index,
                logprobs=choice.logprobs[k] if choice.logprobs is not None else None,
            )
            for k, piece in enumerate(choice.pieces)
        ]
    arguments = call["function"]["arguments"]
    half = len(arguments) // 2
    header = {"index": 0, "id": call["id"], "type": "function"}
    asked = choice.logprobs is not None
    return [
        event(
            {"tool_calls": [{**header, "function": {"name": call["function"]["name"], "arguments": ""}}]},
            index=index,
            no_content_logprobs=asked,
        ),
        event(
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
            index=index,
            no_content_logprobs=asked,
        ),
        event(
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
            index=index,
            no_content_logprobs=asked,
        ),
    ]


def _interleaved(lists: list[list[bytes]], result: Answer, event: Callable[..., bytes]) -> list[bytes]:
    """The choices' content events, round-robin. Each choice but the last finishes inline,
    right after its own events; the last one's finish is the tail's."""
    events: list[bytes] = []
    for step in range(max(len(own) for own in lists)):
        for i, own in enumerate(lists):
            if step < len(own):
                events.append(own[step])
                if step == len(own) - 1 and i < len(lists) - 1:
                    events.append(event({}, result.choices[i].finish_reason, index=i))
    return events
