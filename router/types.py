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

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_json(cls, usage: object) -> Usage | None:
        """Read an OpenAI `usage` object; None when it is absent or not numbers."""
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if type(prompt) is not int or type(completion) is not int:
            return None
        return cls(prompt, completion)
