from __future__ import annotations

from typing import Any

import pytest

from router.errors import InvalidRequest
from router.validate import validate

USER = [{"role": "user", "content": "hi"}]


def ok(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": USER, **fields}


@pytest.mark.parametrize(
    "body",
    [
        ok(),
        ok(max_tokens=10),
        ok(max_completion_tokens=65536),
        ok(stop=["a", "b", "c", "d"]),
        ok(stop="x"),
        ok(logprobs=True, top_logprobs=5),
        ok(temperature=0, top_p=1),
        ok(temperature=2.0),
        ok(reasoning_effort="minimal", thinking_enabled=True),
        ok(stream=True, stream_options={"include_usage": True}),
        ok(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x"},
                        {"type": "image_url", "image_url": {"url": "data:..."}},
                        {"type": "input_audio", "input_audio": {"data": "", "format": "mp3"}},
                        {"type": "file", "file": {"file_url": "https://x"}},
                    ],
                }
            ]
        ),
        ok(
            messages=[
                *USER,
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"},
            ]
        ),
        ok(modalities=["image"], image_config={"size": "1k"}, some_future_field=1),  # unknown fields pass
    ],
)
def test_valid_bodies_pass(body: dict[str, Any]) -> None:
    validate(body)


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"messages": USER}, "model", "provide a model"),
        ({"model": 3, "messages": USER}, "model", "must be a string"),
        ({"model": "m"}, "messages", "provide a messages"),
        (ok(messages=[]), "messages", "non-empty"),
        (ok(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "must be one of"),
        (ok(max_tokens=10, max_completion_tokens=10), "max_tokens", "cannot be used together"),
        (ok(max_completion_tokens=0), "max_completion_tokens", "1 to 65536"),
        (ok(max_completion_tokens=65537), "max_completion_tokens", "1 to 65536"),
        (ok(max_completion_tokens=True), "max_completion_tokens", "1 to 65536"),
        (ok(max_tokens=0), "max_tokens", "at least 1"),
        (ok(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
        (ok(stop=[1]), "stop", "at most 4 strings"),
        (ok(top_logprobs=2), "top_logprobs", "requires 'logprobs'"),
        (ok(temperature=2.5), "temperature", "0 to 2"),
        (ok(temperature="hot"), "temperature", "0 to 2"),
        (ok(top_p=1.5), "top_p", "0 to 1"),
        (
            ok(messages=[{"role": "tool", "content": "x"}]),
            "messages[0].tool_call_id",
            "needs a 'tool_call_id'",
        ),
        (
            ok(messages=[{"role": "user", "content": "x", "tool_calls": []}]),
            "messages[0].tool_calls",
            "only allowed",
        ),
        (
            ok(messages=[{"role": "user", "content": [{"type": "video"}]}]),
            "messages[0].content[0].type",
            "one of",
        ),
        (ok(reasoning_effort="max"), "reasoning_effort", "must be one of"),
        (ok(thinking_enabled="yes"), "thinking_enabled", "boolean"),
        (ok(stream_options={"include_usage": True}), "stream_options", "only allowed when 'stream' is true"),
        (ok(stream="true"), "stream", "boolean"),
    ],
)
def test_invalid_bodies_name_the_parameter(body: dict[str, Any], param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(body)
    assert caught.value.param == param
    assert fragment in caught.value.message
    assert caught.value.http_status == 400
