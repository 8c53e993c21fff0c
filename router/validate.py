"""Pure: check a chat completion request against SPEC §4 before anything goes upstream.

Only rules that hold for every provider live here; what one provider's model does not
take is data in providers.yaml (`params`), applied by translate.py.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidRequest
from .types import JSON

ROLES = frozenset(("system", "developer", "user", "assistant", "tool", "function"))
PART_TYPES = frozenset(("text", "image_url", "input_audio", "file"))
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high")
MAX_STOP_SEQUENCES = 4
MAX_COMPLETION_TOKENS = 65536
MAX_CHOICES = 128  # OpenAI's own bound on n


def validate(body: JSON) -> None:
    """Raise InvalidRequest naming the first offending parameter; return None if the body is valid."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        _fail("model", "you must provide a model parameter" if model is None else "'model' must be a string")
    _messages(body.get("messages"))
    _token_limits(body)
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= MAX_CHOICES):
        _fail("n", f"'n' must be a whole number from 1 to {MAX_CHOICES}")
    _optional_number(body, "temperature", 0, 2)
    _optional_number(body, "top_p", 0, 1)
    _stop(body.get("stop"))
    _logprobs(body)
    _stream(body)
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in REASONING_EFFORTS:
        _fail("reasoning_effort", f"'reasoning_effort' must be one of: {', '.join(REASONING_EFFORTS)}")
    for flag in ("thinking_enabled", "parallel_tool_calls", "logprobs"):
        if flag in body and body[flag] is not None and not isinstance(body[flag], bool):
            _fail(flag, f"'{flag}' must be a boolean")


def _fail(param: str, message: str) -> None:
    raise InvalidRequest(message, param=param)


def _messages(messages: Any) -> None:
    if messages is None:
        _fail("messages", "you must provide a messages parameter")
    if not isinstance(messages, list) or not messages:
        _fail("messages", "'messages' must be a non-empty array")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            _fail(where, f"'{where}' must be an object")
        role = message.get("role")
        if role not in ROLES:
            _fail(f"{where}.role", f"'{where}.role' must be one of: {', '.join(sorted(ROLES))}")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            _fail(f"{where}.tool_call_id", f"'{where}' has role 'tool' and needs a 'tool_call_id'")
        if message.get("tool_calls") is not None and role != "assistant":
            _fail(f"{where}.tool_calls", f"'{where}.tool_calls' is only allowed on assistant messages")
        _content(message.get("content"), where, role)


def _content(content: Any, where: str, role: Any) -> None:
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        _fail(f"{where}.content", f"'{where}.content' must be a string or an array of content parts")
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES and not (role == "assistant" and kind == "refusal"):
            _fail(
                f"{where}.content[{j}].type",
                f"'{where}.content[{j}].type' must be one of: {', '.join(sorted(PART_TYPES))}",
            )


def _token_limits(body: JSON) -> None:
    has_max = body.get("max_tokens") is not None
    has_completion = body.get("max_completion_tokens") is not None
    if has_max and has_completion:
        _fail("max_tokens", "'max_tokens' and 'max_completion_tokens' cannot be used together; use one")
    if has_completion:
        value = body["max_completion_tokens"]
        if not _is_int(value) or not 1 <= value <= MAX_COMPLETION_TOKENS:
            _fail(
                "max_completion_tokens",
                f"'max_completion_tokens' must be a whole number from 1 to {MAX_COMPLETION_TOKENS}",
            )
    if has_max and (not _is_int(body["max_tokens"]) or body["max_tokens"] < 1):
        _fail("max_tokens", "'max_tokens' must be a whole number of at least 1")


def _optional_number(body: JSON, name: str, lo: float, hi: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        _fail(name, f"'{name}' must be a number from {lo} to {hi}")


def _stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if (
        not isinstance(stop, list)
        or len(stop) > MAX_STOP_SEQUENCES
        or not all(isinstance(s, str) for s in stop)
    ):
        _fail("stop", f"'stop' must be a string or an array of at most {MAX_STOP_SEQUENCES} strings")


def _logprobs(body: JSON) -> None:
    top = body.get("top_logprobs")
    if top is None:
        return
    if body.get("logprobs") is not True:
        _fail("top_logprobs", "'top_logprobs' requires 'logprobs' to be true")
    if not _is_int(top) or not 0 <= top <= 20:
        _fail("top_logprobs", "'top_logprobs' must be a whole number from 0 to 20")


def _stream(body: JSON) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        _fail("stream", "'stream' must be a boolean")
    options = body.get("stream_options")
    if options is None:
        return
    if not stream:
        _fail("stream_options", "'stream_options' is only allowed when 'stream' is true")
    if not isinstance(options, dict):
        _fail("stream_options", "'stream_options' must be an object")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
