"""capabilities: what a request uses, and which targets accept all of it. Pure, no I/O."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from router import capabilities
from router.config import FEATURES, ConfigError, load, parse
from router.errors import ParamNotAllowed

SHIPPED = Path(__file__).resolve().parents[2] / "providers.yaml"
CONFIG = parse(
    textwrap.dedent("""
    providers:
      everything: {base_url: "http://a", keys: [k], models: {m: {}}}
      text: {base_url: "http://b", keys: [k], accepts: [], models: {m: {}, v: {accepts: [image]}}}
      tools: {base_url: "http://c", keys: [k], accepts: [tools, tool_role, n], models: {m: {}}}
"""),
    env={},
)
EVERYTHING, TEXT, TOOLS = CONFIG.targets["m"]
USER: Any = [{"role": "user", "content": "hi"}]
TOOL_TURN: Any = [
    *USER,
    {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f"}}]},
    {"role": "tool", "tool_call_id": "c", "content": "42"},
]
IMAGE: Any = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/i.png"}}]}]


@pytest.mark.parametrize(
    ("body", "used"),
    [
        ({"messages": USER}, {}),
        ({"messages": USER, "tools": [{"type": "function"}]}, {"tools": "tools"}),
        ({"messages": USER, "tools": []}, {}),  # an empty list offers nothing
        ({"messages": TOOL_TURN}, {"tool_role": "messages[2].role"}),
        ({"messages": IMAGE}, {"image": "messages[0].content[0].type"}),
        ({"messages": USER, "response_format": {"type": "json_schema"}}, {"json_schema": "response_format"}),
        ({"messages": USER, "response_format": {"type": "json_object"}}, {"json_object": "response_format"}),
        ({"messages": USER, "response_format": {"type": "text"}}, {}),
        ({"messages": USER, "logprobs": True, "top_logprobs": 2}, {"logprobs": "logprobs"}),
        ({"messages": USER, "logprobs": False}, {}),
        ({"messages": USER, "n": 2}, {"n": "n"}),
        ({"messages": USER, "n": 1}, {}),
    ],
)
def test_what_a_request_uses(body: Any, used: dict[str, str]) -> None:
    assert capabilities.needs(body) == used


def test_only_targets_that_accept_everything_used_are_offered() -> None:
    targets = (EVERYTHING, TEXT, TOOLS)
    assert capabilities.serving(targets, {"messages": USER}) == targets
    assert capabilities.serving(targets, {"messages": TOOL_TURN}) == (EVERYTHING, TOOLS)
    assert capabilities.serving(targets, {"messages": TOOL_TURN, "logprobs": True}) == (EVERYTHING,)
    assert capabilities.serving((TEXT,), {"messages": USER}) == (TEXT,)
    (vision,) = CONFIG.targets["v"]  # a model's own list replaces its provider's
    assert capabilities.serving((vision,), {"messages": IMAGE}) == (vision,)


@pytest.mark.parametrize(
    ("targets", "body", "param"),
    [
        ((TEXT,), {"messages": USER, "tools": [{"type": "function"}]}, "tools"),
        ((TEXT,), {"messages": TOOL_TURN}, "messages[2].role"),
        ((TEXT, TOOLS), {"messages": IMAGE}, "messages[0].content[0].type"),
        ((TEXT, TOOLS), {"messages": USER, "response_format": {"type": "json_schema"}}, "response_format"),
        # TOOLS lacks logprobs, TEXT lacks both: the parameter most targets lack is named
        ((TEXT, TOOLS), {"messages": USER, "n": 2, "logprobs": True}, "logprobs"),
    ],
)
def test_when_no_target_can_the_parameter_is_named(targets: Any, body: Any, param: str) -> None:
    with pytest.raises(ParamNotAllowed) as refused:
        capabilities.serving(targets, body)
    assert refused.value.param == param
    assert refused.value.http_status == 400
    assert "'m'" in refused.value.message


def test_accepts_names_only_known_features() -> None:
    with pytest.raises(ConfigError) as bad:
        parse(
            "providers:\n  p: {base_url: 'http://a', keys: [k], accepts: [tools, vision], models: {m: {}}}\n",
            env={},
        )
    assert any("providers.p.accepts[1]: unknown feature 'vision'" in line for line in bad.value.problems)


def test_the_shipped_config_declares_every_provider_from_its_document() -> None:
    config = load(SHIPPED, demo=True, env={})
    accepts = {(t.provider.name, m): t.route.accepts for m, ts in config.targets.items() for t in ts}
    assert all(a is not None and a <= set(FEATURES) for a in accepts.values())
    assert accepts["chenyu", "doubao-seed-2-0-lite"] == frozenset()
    assert accepts["chenyu", "doubao-seed-1-6-vision"] == {"image"}
    assert "n" not in accepts["trinity", "gpt-4o"] and "n" in accepts["real200", "gpt-4o"]
    assert "logprobs" in accepts["trinity", "gpt-4o"] and "logprobs" not in accepts["real200", "gpt-4o"]
