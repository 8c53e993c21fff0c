"""Pure: the Responses `response` object and its output items, built alike for a whole answer
(answer.py) and for the events of a stream (stream.py).

Ids derive from the request's answer id, so a replayed answer carries the same ones:
`resp_<id>`, `msg_<id>`, `rs_<id>`, `fc_<id>`; the n-th further item of a kind in one answer
gets `_<n>` (`fc_<id>_1` is its second function call).
"""

from __future__ import annotations

from typing import Any

from ...errors import RouterError, error_type
from ...types import JSON, Usage
from ..endpoint import Answering

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
"""Chat finish reasons that leave the answer incomplete, and the Responses reason."""

_FAILURE_CODES = {429: "rate_limit_exceeded"}
"""`response.error.code` takes OpenAI's own codes only: router's read as these."""


def item_id(prefix: str, answer_id: str, n: int = 0) -> str:
    return f"{prefix}_{answer_id}" if n == 0 else f"{prefix}_{answer_id}_{n}"


def finish_status(finish_reason: Any) -> tuple[str, JSON | None]:
    """The response's `status` and `incomplete_details` for the chat answer's finish reason."""
    reason = _INCOMPLETE.get(finish_reason) if isinstance(finish_reason, str) else None
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def message_item(id: str, content: list[JSON], status: str) -> JSON:
    return {"type": "message", "id": id, "role": "assistant", "status": status, "content": content}


def text_part(text: str, logprobs: list[JSON] | None = None) -> JSON:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}


def refusal_part(refusal: str) -> JSON:
    return {"type": "refusal", "refusal": refusal}


def reasoning_item(id: str, summary: str | None, status: str) -> JSON:
    """The model's reasoning as chat providers show it (`reasoning_content`), given as the
    item's summary: what Responses clients display of reasoning (OpenAI's own raw reasoning
    is never shown), so it reaches the reader where clients look."""
    parts = [summary_part(summary)] if summary is not None else []
    return {"type": "reasoning", "id": id, "summary": parts, "status": status}


def summary_part(text: str) -> JSON:
    return {"type": "summary_text", "text": text}


def function_call_item(id: str, call_id: str, name: str, arguments: str, status: str) -> JSON:
    return {
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def output_logprobs(tokens: Any) -> list[JSON]:
    """Chat's `logprobs.content` -> Responses logprobs (the same fields; `bytes` required)."""
    if not isinstance(tokens, list):
        return []
    out = []
    for token in tokens:
        entry = _logprob(token)
        if entry is not None:
            top = token.get("top_logprobs")
            alternatives = [_logprob(t) for t in top] if isinstance(top, list) else []
            entry["top_logprobs"] = [t for t in alternatives if t is not None]
            out.append(entry)
    return out


def _logprob(token: Any) -> JSON | None:
    if not isinstance(token, dict):
        return None
    text, logprob = token.get("token"), token.get("logprob")
    if not isinstance(text, str) or isinstance(logprob, bool) or not isinstance(logprob, int | float):
        return None  # a provider's odd entry: skipped, not invented
    raw = token.get("bytes")
    return {"token": text, "bytes": raw if isinstance(raw, list) else list(text.encode()), "logprob": logprob}


def usage_object(usage: Any) -> JSON | None:
    """Chat usage -> Responses usage; None when the answer has none."""
    counted = Usage.from_json(usage)
    if counted is None:
        return None
    return {
        "input_tokens": counted.prompt_tokens,
        # Chat reports cache reads only: no cache writes is what it says.
        "input_tokens_details": {"cached_tokens": counted.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": counted.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": counted.reasoning_tokens},
        "total_tokens": counted.total_tokens,
    }


def failure(error: RouterError) -> JSON:
    """`response.error` of a failed response."""
    return {
        "code": _FAILURE_CODES.get(error.http_status, "server_error"),
        "message": error.message,
        "param": error.param,
        "type": error_type(error.http_status),
    }


def response_object(
    answering: Answering,
    *,
    model: str,
    status: str,
    output: list[JSON],
    usage: JSON | None = None,
    incomplete_details: JSON | None = None,
    error: JSON | None = None,
) -> JSON:
    """The whole `response`, with what the request asked for echoed as OpenAI echoes it — but a
    parameter the request left unset is left out rather than sent as null: a stream carries
    this object twice (response.created, response.completed), and those nulls were a third of
    its bytes. `error`, `incomplete_details` and `usage`, which say how it ended, are always there."""
    request = answering.request
    text = request.get("text")
    text = text if isinstance(text, dict) else {}
    whole = {
        "id": "resp_" + answering.answer_id,
        "object": "response",
        "created_at": answering.created,
        "status": status,
        "background": False,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "metadata": request.get("metadata") or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
        "safety_identifier": request.get("safety_identifier"),
        "store": False,
        "temperature": request.get("temperature"),
        "text": {**text, "format": text.get("format") or {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_logprobs": request.get("top_logprobs"),
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": usage,
        "user": request.get("user"),
    }
    return {name: value for name, value in whole.items() if value is not None or name in _ALWAYS}


_ALWAYS = frozenset({"error", "incomplete_details", "usage"})
"""Fields of the response object sent even when null."""
