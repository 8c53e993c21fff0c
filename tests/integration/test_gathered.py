"""Requests the client did not stream, read as streams upstream and gathered into one answer.

Real sockets: the router in a thread, simulated providers, httpx as the client. What the
provider was sent, what the client got, and what the ledger holds are each checked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
ROUTING = "{timeouts: {connect: 1s, first_token: 1s, idle: 1s, response: 3s, total: 10s}}"


def serve(router: Router, tmp_path: Path, *providers: str) -> RouterThread:
    text = config_yaml(*providers, routing=ROUTING)
    return router(text + f"state: {{ledger_file: {tmp_path / 'ledger.jsonl'}}}\n")


def records(r: RouterThread) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(r.config))


def direct(server: SimServer, body: dict[str, Any]) -> dict[str, Any]:
    """The provider's own non-stream answer."""
    response = httpx.post(
        server.base_url + "/chat/completions", json=body, headers={"Authorization": "Bearer k"}
    )
    assert response.status_code == 200
    return orjson.loads(response.content)


def test_the_provider_is_asked_for_a_stream_and_the_client_gets_its_whole_answer(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    server = sim("trinity", chunks=6)
    r = serve(router, tmp_path, provider_yaml("t", server, {"gpt-4o": "{upstream: gpt-4o}"}))
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}
    )
    assert response.status_code == 200, response.text
    sent = server.requests[-1].body
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    got = response.json()
    native = direct(server, {"model": "gpt-4o", "messages": HELLO})
    for name in ("object", "model", "choices", "usage"):
        assert got[name] == native[name], name
    (record,) = records(r)
    assert (
        record["usage_source"] == "provider"
        and record["completion_tokens"] == got["usage"]["completion_tokens"]
    )


def test_a_provider_that_does_not_stream_is_sent_the_request_as_it_came(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    server = sim("trinity")
    r = serve(router, tmp_path, provider_yaml("t", server, ["gpt-4o"], streaming="false"))
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}
    )
    assert response.status_code == 200
    assert "stream" not in server.requests[-1].body


def test_the_client_leaving_stops_the_generation_and_settles_what_was_read(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    server = sim("trinity", chunks=60, chunk_gap=0.05)  # 3 s of answer
    r = serve(router, tmp_path, provider_yaml("t", server, ["gpt-4o"]))
    body = {"model": "gpt-4o", "messages": HELLO}
    try:
        httpx.post(r.url + "/v1/chat/completions", headers=AUTH, json=body, timeout=0.8)
        raise AssertionError("the answer should have taken longer than the client waited")
    except httpx.ReadTimeout:
        pass  # the client leaves
    deadline = time.monotonic() + 5
    while (server.streams_left == 0 or not records(r)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.streams_left == 1  # the provider stopped sending
    (record,) = records(r)
    assert record["outcome"] == "client_disconnected" and record["usage_source"] == "estimated"
    # What was read before the client left: some of the answer, not none and not all of it.
    assert 0 < record["completion_tokens"] < 60


def test_a_break_past_the_first_token_is_the_answer_not_a_retry(
    sim: Sim, router: Router, tmp_path: Path
) -> None:
    a, b = sim("trinity", chunks=6, faults="cut=3"), sim("real200", chunks=6)
    r = serve(
        router, tmp_path, provider_yaml("a", a, ["gpt-4o"]), provider_yaml("b", b, ["gpt-4o"], priority="2")
    )
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}
    )
    assert response.status_code == 502 and response.json()["error"]["type"]
    assert (a.chat_requests, b.chat_requests) == (1, 0)
    (record,) = records(r)
    assert record["status"] == 502 and record["outcome"] == "error" and record["completion_tokens"] == 3


def test_a_malformed_event_in_a_gathered_answer_is_dropped(sim: Sim, router: Router, tmp_path: Path) -> None:
    server = sim("trinity", chunks=6, faults="malformed=3")
    r = serve(router, tmp_path, provider_yaml("t", server, ["gpt-4o"]))
    response = httpx.post(
        r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}
    )
    assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] == "stop"


def test_gathered_answers_reuse_their_connection(sim: Sim, router: Router, tmp_path: Path) -> None:
    server = sim("trinity", chunks=8, chunk_gap=0.002)
    r = serve(router, tmp_path, provider_yaml("t", server, ["gpt-4o"]))
    for _ in range(5):
        response = httpx.post(
            r.url + "/v1/chat/completions", headers=AUTH, json={"model": "gpt-4o", "messages": HELLO}
        )
        assert response.status_code == 200
    assert server.connections_accepted == 1  # read to its end, each answer gave its connection back
