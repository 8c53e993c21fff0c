"""Small aliases and value types shared by every module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]
RawHeaders = list[tuple[bytes, bytes]]
"""ASGI-style header list: lower-case names, latin-1 bytes."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one answer, as the provider reported it or as estimated."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    """Of the prompt tokens, those the provider served from its prompt cache (0: none or not reported)."""
    reasoning_tokens: int = 0
    """Of the completion tokens, those spent reasoning (OpenAI counts them in the completion)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_json(cls, usage: object) -> Usage | None:
        """Read an OpenAI `usage` object; None when it is absent or not numbers. The details
        (`prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`)
        are optional: absent or not a count, they read as 0."""
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if type(prompt) is not int or type(completion) is not int:
            return None
        details = usage.get("prompt_tokens_details")
        cached = details.get("cached_tokens") if type(details) is dict else None
        details = usage.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if type(details) is dict else None
        return cls(
            prompt,
            completion,
            cached if type(cached) is int and cached > 0 else 0,
            reasoning if type(reasoning) is int and reasoning > 0 else 0,
        )
