from __future__ import annotations

from types import MappingProxyType

import pytest

from router.config import ModelRoute, ParamRules
from router.errors import ParamNotAllowed
from router.translate import client_wants_usage, to_upstream

BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def route(upstream: str = "gpt-4o", **rules: object) -> ModelRoute:
    frozen = {k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in rules.items()}
    return ModelRoute(name="gpt-4o", upstream=upstream, params=ParamRules(**frozen))  # type: ignore[arg-type]


def test_upstream_model_id_replaces_the_clients() -> None:
    out = to_upstream(BODY, route("gpt-4o-2024-08-06"), stream_usage=True)
    assert out["model"] == "gpt-4o-2024-08-06"
    assert BODY["model"] == "gpt-4o"  # the original is never changed: retries translate from it


def test_drop_defaults_rename() -> None:
    body = {**BODY, "thinking_enabled": True, "max_completion_tokens": 50, "extra": {"kept": 1}}
    out = to_upstream(
        body,
        route(
            drop=frozenset({"thinking_enabled"}),
            defaults={"temperature": 0.3},
            rename={"max_completion_tokens": "max_tokens"},
        ),
        stream_usage=True,
    )
    assert "thinking_enabled" not in out
    assert out["temperature"] == 0.3
    assert out["max_tokens"] == 50 and "max_completion_tokens" not in out
    assert out["extra"] == {"kept": 1}  # unknown fields pass through untouched
    out = to_upstream({**BODY, "temperature": 1.5}, route(defaults={"temperature": 0.3}), stream_usage=True)
    assert out["temperature"] == 1.5  # a default never overrides the client


def test_allowed_values_refuse_with_the_parameter_named() -> None:
    rules = route(allowed={"reasoning_effort": ("low", "medium", "high"), "thinking_enabled": (True,)})
    assert (
        to_upstream({**BODY, "reasoning_effort": "low"}, rules, stream_usage=True)["reasoning_effort"]
        == "low"
    )
    with pytest.raises(ParamNotAllowed) as caught:
        to_upstream({**BODY, "reasoning_effort": "minimal"}, rules, stream_usage=True)
    assert caught.value.param == "reasoning_effort"
    assert "allowed: 'low', 'medium', 'high'" in caught.value.message
    with pytest.raises(ParamNotAllowed):
        to_upstream({**BODY, "thinking_enabled": False}, rules, stream_usage=True)


def test_a_boolean_rule_does_not_admit_one() -> None:
    rules = route(allowed={"thinking_enabled": (True,), "n": (1,)})
    with pytest.raises(ParamNotAllowed):
        to_upstream({**BODY, "thinking_enabled": 1}, rules, stream_usage=True)
    with pytest.raises(ParamNotAllowed):
        to_upstream({**BODY, "n": True}, rules, stream_usage=True)
    assert to_upstream({**BODY, "n": 1.0}, rules, stream_usage=True)["n"] == 1.0


def test_streams_ask_for_usage_where_the_provider_takes_it() -> None:
    stream = {**BODY, "stream": True}
    assert to_upstream(stream, route(), stream_usage=True)["stream_options"] == {"include_usage": True}
    kept = to_upstream(
        {**stream, "stream_options": {"chunk_include_usage": True}}, route(), stream_usage=True
    )
    assert kept["stream_options"] == {"chunk_include_usage": True, "include_usage": True}
    without = to_upstream({**stream, "stream_options": {"include_usage": True}}, route(), stream_usage=False)
    assert "stream_options" not in without
    assert "stream_options" not in to_upstream(BODY, route(), stream_usage=True)


def test_client_wants_usage() -> None:
    assert client_wants_usage({"stream_options": {"include_usage": True}})
    assert not client_wants_usage({"stream_options": {"include_usage": False}})
    assert not client_wants_usage({})
