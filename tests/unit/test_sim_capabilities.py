"""Each simulator refuses the capabilities its document does not list, naming the parameter."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from router.sim.checks import check
from router.sim.dialects import DIALECTS, FEATURES

HELLO: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def with_part(part: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "look"}, part]}]}


# feature -> (what a request adds to use it, the param a refusal names)
USES: dict[str, tuple[dict[str, Any], str]] = {
    "tools": ({"tools": [TOOL]}, "tools"),
    "tool_role": (
        {
            "messages": [
                *HELLO,
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
                {"role": "tool", "tool_call_id": "c", "content": "42"},
            ]
        },
        "messages[2].role",
    ),
    "image": (
        with_part({"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
        "messages[0].content[1].type",
    ),
    "audio": (
        with_part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}}),
        "messages[0].content[1].type",
    ),
    "file": (
        with_part({"type": "file", "file": {"file_url": "https://x/y.mp4"}}),
        "messages[0].content[1].type",
    ),
    "json_object": ({"response_format": {"type": "json_object"}}, "response_format"),
    "json_schema": (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "a", "schema": {"type": "object"}},
            }
        },
        "response_format",
    ),
    "logprobs": ({"logprobs": True}, "logprobs"),
    "n": ({"n": 2}, "n"),
}

# The table, written out again from the documents rather than read from dialects.py, so a
# change to the data that the documents do not support fails here.
SUPPORTED = {
    ("trinity", "gpt-4o"): {
        "tools",
        "tool_role",
        "image",
        "audio",
        "file",
        "json_object",
        "json_schema",
        "logprobs",
    },
    ("trinity", "doubao-seed-1-6-thinking-agent-preview"): {
        "tools",
        "tool_role",
        "image",
        "audio",
        "file",
        "json_object",
        "json_schema",
        "logprobs",
    },
    ("chenyu", "doubao-seed-2-0-lite-260428"): set(),
    ("chenyu", "doubao-seed-1-6-vision-250815"): {"image"},
    ("real200", "gpt-4o"): {"tools", "tool_role", "json_object", "json_schema", "n"},
    ("real200", "claude-sonnet-4"): {"tools", "tool_role", "json_object", "json_schema", "n"},
}
CASES = [(dialect, model, feature) for (dialect, model) in SUPPORTED for feature in FEATURES]


def test_the_table_covers_every_feature() -> None:
    assert set(USES) == set(FEATURES)


@pytest.mark.parametrize(("dialect", "model", "feature"), CASES)
def test_a_feature_is_accepted_exactly_where_documented(dialect: str, model: str, feature: str) -> None:
    extra, param = USES[feature]
    rejection = check(DIALECTS[dialect], {"model": model, "messages": HELLO, **extra})
    if feature in SUPPORTED[(dialect, model)]:
        assert rejection is None
        return
    assert rejection is not None
    error = orjson.loads(rejection.body())["error"]
    assert (rejection.status, error["param"], error["type"]) == (400, param, "invalid_request_error")
    assert feature.split("_")[0] in error["message"] or "role" in error["message"]


def test_an_unused_feature_is_not_refused() -> None:
    chenyu = DIALECTS["chenyu"]
    model = "doubao-seed-2-0-lite-260428"
    harmless: list[dict[str, Any]] = [
        {"tools": []},
        {"logprobs": False},
        {"n": 1},
        {"response_format": {"type": "text"}},
    ]
    for extra in harmless:
        assert check(chenyu, {"model": model, "messages": HELLO, **extra}) is None


def test_chenyu_keeps_its_role_message() -> None:
    extra, _ = USES["tool_role"]
    rejection = check(DIALECTS["chenyu"], {"model": "doubao-seed-2-0-lite-260428", **extra})
    assert rejection is not None
    assert rejection.message == "messages[2].role 'tool' is not supported; use one of assistant, system, user"


@pytest.mark.parametrize(
    ("dialect", "model", "extra", "message"),
    [
        ("real200", "gpt-4o", USES["image"][0], "model gpt-4o does not support image input"),
        ("trinity", "gpt-4o", USES["n"][0], "model gpt-4o does not support n > 1"),
        ("real200", "gpt-4o", USES["logprobs"][0], "model gpt-4o does not support logprobs"),
        (
            "chenyu",
            "doubao-seed-1-6-vision-250815",
            USES["json_schema"][0],
            "model doubao-seed-1-6-vision-250815 does not support response_format type 'json_schema'",
        ),
        ("chenyu", "doubao-seed-2-0-lite-260428", USES["tools"][0], "does not support tools"),
    ],
)
def test_refusals_say_what_is_unsupported(
    dialect: str, model: str, extra: dict[str, Any], message: str
) -> None:
    rejection = check(DIALECTS[dialect], {"model": model, "messages": HELLO, **extra})
    assert rejection is not None and message in rejection.message
