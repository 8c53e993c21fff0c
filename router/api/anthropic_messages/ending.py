"""Pure: how a chat answer ended and what it used, in Anthropic's terms (whole answers and streams).

    finish_reason                      stop_reason
    stop, with a matched stop string   stop_sequence (and `stop_sequence` names it): vLLM-style
      (the choice's `stop_reason`)     providers report the match; only one of the request's
                                       stop_sequences counts
    stop                               end_turn
    length                             max_tokens
    tool_calls (or function_call)      tool_use
    content_filter                     refusal
    anything else or none              end_turn

An answer that carries tool calls ends with `tool_use` whatever its finish reason (some
providers say `stop`): Anthropic clients run tools when, and only when, they read `tool_use`.

Usage: Anthropic counts cached prompt tokens apart from `input_tokens` (the three add up to
the prompt), so `input_tokens` is the prompt minus what the provider served from its cache.
Chat providers do not report cache writes, nor charge for them: `cache_creation_input_tokens`
is 0.
"""

from __future__ import annotations

from typing import Any

from ...types import JSON, Usage

_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(
    finish_reason: Any, matched: Any, request: JSON, *, tool_calls: bool
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for a choice's finish, its matched stop, and the client's body."""
    if tool_calls:
        return "tool_use", None
    if finish_reason == "stop" and isinstance(matched, str) and matched:
        sequences = request.get("stop_sequences")
        if isinstance(sequences, list) and matched in sequences:
            return "stop_sequence", matched
    return _STOP_REASONS.get(finish_reason, "end_turn") if isinstance(
        finish_reason, str
    ) else "end_turn", None


def usage(usage_json: Any) -> JSON:
    """An OpenAI `usage` object -> Anthropic's (zeros when there is none to read)."""
    used = Usage.from_json(usage_json) or Usage(0, 0)
    cached = min(used.cached_tokens, used.prompt_tokens)
    return {
        "input_tokens": used.prompt_tokens - cached,
        "output_tokens": used.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }
