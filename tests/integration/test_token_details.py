"""Cached and reasoning tokens, from the provider's usage to the settlement record and its cost.

Real sockets: a simulated trinity (whose usage carries OpenAI's details: the conversation
before the last message is its cached prefix, `reasoning_effort` its reasoning tokens), the
router in a thread, httpx as the client, records read back from the ledger. The same prompt
asked as a stream and as one answer must settle the same tokens, however the provider
reports usage in its streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
MODEL = "doubao-seed-1-6-thinking-agent-preview"
PRICE = "{price: {input: 2.5, cached_input: 0.25, output: 10}}"
CONVERSATION = [
    {"role": "system", "content": "You answer questions about the weather in one short sentence."},
    {"role": "user", "content": "What is the weather like in Lisbon in the spring?"},
    {"role": "assistant", "content": "Mild and sunny, with the odd shower in March."},
    {"role": "user", "content": "And in the autumn?"},
]
BODY = {"model": MODEL, "messages": CONVERSATION, "reasoning_effort": "high"}

# How the provider reports usage: (simulator options, provider options in providers.yaml).
WAYS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "usage chunk": ({"stream_usage": "on_request"}, {}),
    "usage on the finishing chunk": ({"stream_usage": "final_chunk"}, {}),
    "whole answers": ({}, {"streaming": "false"}),  # a non-stream request is sent as one
}


def serve(router: Router, tmp_path: Path, *providers: str) -> RouterThread:
    return router(config_yaml(*providers) + f"state: {{ledger_file: {tmp_path / 'ledger.jsonl'}}}\n")


def chat(r: RouterThread, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(r.url + "/v1/chat/completions", headers=AUTH, json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response


def direct(server: SimServer, body: dict[str, Any]) -> dict[str, Any]:
    """The provider's own usage for a non-stream request."""
    response = httpx.post(
        server.base_url + "/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    )
    assert response.status_code == 200
    return orjson.loads(response.content)["usage"]  # type: ignore[no-any-return]


def usage_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
    return [chunk["usage"] for chunk in map(orjson.loads, events) if chunk.get("usage")]


def records(r: RouterThread, count: int) -> list[dict[str, Any]]:
    """The ledger once it holds `count` records (a stream settles as its last bytes go out)."""
    deadline = time.monotonic() + 10
    while len(found := asyncio.run(ledger.read(r.config))) < count:
        assert time.monotonic() < deadline, f"{len(found)} records of {count}"
        time.sleep(0.02)
    return found


def cost(record: dict[str, Any], input_price: float, cached_price: float, output_price: float) -> float:
    prompt, cached = record["prompt_tokens"], record["cached_tokens"]
    return (
        (prompt - cached) * input_price + cached * cached_price + record["completion_tokens"] * output_price
    ) / 1e6


@pytest.mark.parametrize("way", WAYS)
def test_a_stream_and_a_non_stream_answer_settle_the_same_cached_and_reasoning_tokens(
    way: str, sim: Sim, router: Router, tmp_path: Path
) -> None:
    sim_options, provider_options = WAYS[way]
    server = sim("trinity", **sim_options)
    r = serve(router, tmp_path, provider_yaml("trinity", server, {MODEL: PRICE}, **provider_options))
    truth = direct(server, BODY)
    cached = truth["prompt_tokens_details"]["cached_tokens"]
    reasoning = truth["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < cached < truth["prompt_tokens"] and 0 < reasoning < truth["completion_tokens"]

    plain = chat(r, BODY)
    chat(r, {**BODY, "stream": True})  # the client asks for no usage: it is settled all the same
    asked = chat(r, {**BODY, "stream": True, "stream_options": {"include_usage": True}})

    sent = [request.body.get("stream") is True for request in server.requests][1:]  # after direct()
    assert sent == ([False, True, True] if provider_options else [True, True, True])
    # What the client sees is the provider's usage as it sent it, details and all.
    assert plain.json()["usage"] == truth
    assert usage_chunks(asked) == [truth]
    found = records(r, 3)
    assert len(found) == 3
    for record in found:
        assert record["usage_source"] == "provider"
        assert (record["prompt_tokens"], record["completion_tokens"]) == (
            truth["prompt_tokens"],
            truth["completion_tokens"],
        )
        assert (record["cached_tokens"], record["reasoning_tokens"]) == (cached, reasoning)
        assert record["cost"] == pytest.approx(cost(record, 2.5, 0.25, 10), abs=1e-12)
    # The cache made it cheaper than the whole prompt at the input price.
    assert found[0]["cost"] < cost({**found[0], "cached_tokens": 0}, 2.5, 0.25, 10)


def test_a_provider_that_reports_no_details_settles_none_and_pays_input_for_the_prompt(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    server = sim("real200")  # its document shows usage without details
    price = "{price: {input: 2.5, cached_input: 0.25, output: 10}}"
    r = serve(router, tmp_path, provider_yaml("real200", server, {"gpt-4o": price}, streaming="false"))
    body = {"model": "gpt-4o", "messages": CONVERSATION}
    assert "prompt_tokens_details" not in chat(r, body).json()["usage"]
    (record,) = records(r, 1)
    assert record["usage_source"] == "provider"
    assert (record["cached_tokens"], record["reasoning_tokens"]) == (0, 0)
    assert record["cost"] == pytest.approx(cost(record, 2.5, 2.5, 10), abs=1e-12)
