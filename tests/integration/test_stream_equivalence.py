"""A streamed answer, relayed and aggregated, is the provider's own non-stream answer.

router sends a non-stream client request upstream as a stream (so the first-token and idle
timeouts apply) and hands the client the aggregate (router/aggregate.py). Here each dialect's
simulator answers the same request both ways over real sockets; the stream goes through the
relay as router/attempt.py builds it and then through the aggregate, and the two answers
must agree field by field, but for:
- `id` and `created`: two requests, and router sets both itself (the simulators make their
  tool-call ids from their answer's id, so those are compared with it taken out);
- `usage` where the provider reports none in streams (shipped providers.yaml
  `stream_usage: false`: chenyu, real200): the aggregate carries router's estimate, the
  relay's, which is also what is settled; the provider's non-stream answer has its own count.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import limits, sse, translate
from router.aggregate import CompletionAggregate
from router.config import Target, load
from router.envelope import usage_json
from router.relay import StreamRelay
from router.sim import SimServer

SHIPPED = load(Path(__file__).resolve().parents[2] / "providers.yaml", demo=True, env={})
HELLO = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
FORCED = {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
SCHEMA = {
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
                "required": ["answer", "score"],
                "additionalProperties": False,
            },
        },
    }
}

# (provider, client model, what the request adds): only what each dialect accepts
# (router/sim/dialects.py FEATURES; providers.yaml `accepts`).
CASES: list[tuple[str, str, dict[str, Any]]] = [
    *[
        (p, m, {})
        for p, m in (("trinity", "gpt-4o"), ("chenyu", "doubao-seed-2-0-lite"), ("real200", "gpt-4o"))
    ],
    *[
        (p, m, {"stop": ["answer"]})
        for p, m in (("trinity", "gpt-4o"), ("chenyu", "doubao-seed-2-0-lite"), ("real200", "gpt-4o"))
    ],
    *[
        (p, m, {"max_completion_tokens": 3})  # renamed to max_tokens where the provider says so
        for p, m in (
            ("trinity", "gpt-4o"),
            ("chenyu", "doubao-seed-2-0-lite"),
            ("real200", "claude-sonnet-4"),
        )
    ],
    ("trinity", "gpt-4o", FORCED),
    ("real200", "gpt-4o", FORCED),
    ("real200", "gpt-4o", {"tools": [WEATHER]}),  # tool_choice auto, on a user turn: a call
    ("trinity", "gpt-4o", SCHEMA),
    ("real200", "gpt-4o", SCHEMA),
    ("trinity", "gpt-4o", {"logprobs": True, "top_logprobs": 2}),
    ("trinity", "gpt-4o", {"logprobs": True, "max_completion_tokens": 4}),
    ("trinity", "gpt-4o", {"logprobs": True, **FORCED}),
    ("real200", "gpt-4o", {"n": 2}),
    ("real200", "gpt-4o", {"n": 2, "stop": "answer"}),
    ("real200", "gpt-4o", {"n": 2, **FORCED}),
    ("real200", "gpt-4o", {"n": 2, **SCHEMA}),
    # usage details: thinking is billed as reasoning tokens, cached as the prompt's prefix
    ("trinity", "doubao-seed-1-6-thinking-agent-preview", {"reasoning_effort": "high"}),
    (
        "trinity",
        "doubao-seed-1-6-thinking-agent-preview",
        {"messages": [{"role": "system", "content": "Be brief."}, *HELLO], "thinking_enabled": True},
    ),
]


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, SimServer]]:
    started = {name: SimServer(name).start_in_thread() for name in ("trinity", "chenyu", "real200")}
    yield started
    for server in started.values():
        server.stop()


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": "Bearer sk-sim"}, timeout=5) as c:
        yield c


def target(provider: str, model: str) -> Target:
    return next(t for t in SHIPPED.targets[model] if t.provider.name == provider)


def native(client: httpx.Client, server: SimServer, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(server.base_url + "/chat/completions", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def aggregated(
    client: httpx.Client, server: SimServer, body: dict[str, Any], t: Target
) -> tuple[dict[str, Any], StreamRelay]:
    """The stream's answer as router would hand it to a non-stream client: relay, then aggregate."""
    payload = orjson.dumps(body)
    relay = StreamRelay(  # as router/attempt.py builds it, the usage chunk always asked for
        provider=t.provider.name,
        wants_usage=True,
        expects_usage=t.provider.stream_usage,
        choices=body.get("n") or 1,
        upstream_model=t.route.upstream,
        answer_id="chatcmpl-router",
        created=1,
        prompt_tokens=limits.estimate(body, len(payload)).prompt_tokens,
    )
    whole = CompletionAggregate()
    splitter = sse.EventSplitter()

    def take(out: bytes) -> None:
        for event in splitter.feed(out):
            data = sse.data_of(event)
            if data is not None and not sse.is_done(data):
                whole.feed_event(data)

    with client.stream("POST", server.base_url + "/chat/completions", content=payload) as response:
        assert response.status_code == 200
        for raw in response.iter_raw():
            take(relay.feed(raw))
            assert relay.failure is None
    take(relay.end())
    assert relay.done and relay.dropped == 0
    return whole.result(), relay


@pytest.mark.parametrize(
    ("provider", "model", "extra"),
    CASES,
    ids=[f"{p}-{m}-{'+'.join(sorted(e)) or 'plain'}" for p, m, e in CASES],
)
def test_the_aggregated_stream_is_the_non_stream_answer(
    sims: dict[str, SimServer],
    client: httpx.Client,
    provider: str,
    model: str,
    extra: dict[str, Any],
) -> None:
    t = target(provider, model)
    body = {"model": model, "messages": HELLO, **extra}
    plain = native(client, sims[provider], translate.to_upstream(body, t.route, stream_usage=False))
    upstream = translate.to_upstream({**body, "stream": True}, t.route, stream_usage=t.provider.stream_usage)
    assert ("stream_options" in upstream) is t.provider.stream_usage
    answer, relay = aggregated(client, sims[provider], upstream, t)

    for one in (answer, plain):
        # Two requests, two ids (router sets its own); the sims derive tool-call ids from theirs.
        own = one.pop("id")[-8:]
        assert one.pop("created")
        for choice in one["choices"]:
            for call in choice["message"].get("tool_calls") or ():
                call["id"] = call["id"].replace(own, "<id>")
    if t.provider.stream_usage:  # the provider's usage object, details and all
        assert relay.usage is not None
    else:  # none in the stream: router's estimate, as settled; the provider's own count differs
        assert relay.usage is None
        assert answer.pop("usage") == usage_json(relay.estimate())
        assert set(plain.pop("usage")) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert answer == plain


def test_the_cases_cover_what_the_brief_names() -> None:
    """Tool calls, logprobs, n, stop, length and usage details are each exercised somewhere."""
    seen = {key for _, _, extra in CASES for key in extra}
    assert {
        "tools",
        "tool_choice",
        "response_format",
        "logprobs",
        "n",
        "stop",
        "max_completion_tokens",
    } <= seen
