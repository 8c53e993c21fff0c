"""Failover on every API endpoint, over real sockets: before the commit point another provider
answers in the client's API shape; after it, the stream ends with the API's own error event.

Two simulated providers (real200's dialect, which serves chat, embedding and rerank models)
serve each model, routed in order: `a` first, `b` when `a` fails. The rig here (cases, config,
answer checks against the SDKs' own models) is shared with test_endpoints_settlement.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from router import ledger
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
ROUTING = (
    "{strategy: ordered, max_attempts: 3, breaker: {failures: 3, cooldown: 1s, max_cooldown: 2s},"
    " timeouts: {connect: 1s, first_token: 500ms, idle: 500ms, response: 2s, total: 6s}}"
)
MODELS = {
    "gpt-4o": "{}",
    "text-embedding-3-small": "{kind: embedding}",
    "bge-reranker-v2-m3": "{kind: rerank}",
}
HELLO = [{"role": "user", "content": "Hello there"}]


@dataclass(frozen=True)
class Case:
    """One endpoint, called one way (whole or streamed)."""

    endpoint: str
    """Its name in settlement records."""
    path: str
    body: dict[str, Any]
    stream: bool = False
    headers: dict[str, str] = field(default_factory=lambda: dict(AUTH))

    @property
    def id(self) -> str:
        return self.endpoint + ("-stream" if self.stream else "")

    def json(self) -> dict[str, Any]:
        return {**self.body, "stream": True} if self.stream else self.body


CHAT = Case("chat", "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO})
EMBEDDINGS = Case(
    "embeddings", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a cat", "a dog"]}
)
RERANK = Case(
    "rerank",
    "/v1/rerank",
    {"model": "bge-reranker-v2-m3", "query": "which cat", "documents": ["a dog", "a cat", "the cat"]},
)
RESPONSES = Case("responses", "/v1/responses", {"model": "gpt-4o", "input": "Hello there"})
# The Anthropic SDKs send the key as x-api-key: so do these requests.
MESSAGES = Case(
    "messages",
    "/v1/messages",
    {"model": "gpt-4o", "max_tokens": 64, "messages": HELLO},
    headers={"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01"},
)
RESPONSES_STREAM = Case(RESPONSES.endpoint, RESPONSES.path, RESPONSES.body, stream=True)
MESSAGES_STREAM = Case(MESSAGES.endpoint, MESSAGES.path, MESSAGES.body, stream=True, headers=MESSAGES.headers)
CHAT_STREAM = Case(CHAT.endpoint, CHAT.path, CHAT.body, stream=True)

NEW = [EMBEDDINGS, RERANK, RESPONSES, MESSAGES]
"""The endpoints of issue 18, each once, whole."""
EVERY_WAY = [*NEW, RESPONSES_STREAM, MESSAGES_STREAM]
"""...and the ones that stream, streamed too."""


def ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


# -- the rig ----------------------------------------------------------------------------------------


def config(
    *providers: str, client: str = "", ledger_file: Path | None = None, state_url: str = "memory://"
) -> str:
    """A config with one client (CLIENT_KEY; `client`: more YAML lines for it) and, with a
    ledger file, records to read back."""
    text = ""
    if ledger_file is not None or state_url != "memory://":
        extra = f", ledger_file: {ledger_file}" if ledger_file is not None else ""
        text += f'state: {{url: "{state_url}"{extra}}}\n'
    text += "admin: {key: admin-secret}\n"
    text += f"clients:\n  - name: team\n    key: {CLIENT_KEY}\n"
    text += "".join(f"    {line}\n" for line in client.splitlines() if line.strip())
    return text + f"routing: {ROUTING}\nproviders:\n" + "".join(providers)


def pair(
    sim: Sim,
    router: Router,
    *,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[RouterThread, SimServer, SimServer]:
    """Providers a then b, each serving every model; options go to config()."""
    sa, sb = sim("real200", chunks=4, **(a or {})), sim("real200", chunks=4, **(b or {}))
    r = router(config(provider_yaml("a", sa, MODELS), provider_yaml("b", sb, MODELS), **options))
    return r, sa, sb


def post(r: RouterThread, case: Case, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        r.url + case.path, headers={**case.headers, **(headers or {})}, json=case.json(), timeout=15
    )


def served(*servers: SimServer) -> list[int]:
    """The API requests each simulator reports it served (its control endpoint, as ops read it)."""
    counts = []
    for server in servers:
        base = f"http://{server.host}:{server.port}"
        counts.append(httpx.get(base + "/_sim/stats", timeout=5).json()["requests"])
    return counts


def records(r: RouterThread) -> list[dict[str, Any]]:
    return asyncio.run(ledger.read(r.config))


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """(event name or None, parsed data) per SSE event; `[DONE]` stays a string."""
    out: list[tuple[str | None, Any]] = []
    for block in text.split("\n\n"):
        name, data = None, None
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        if data is not None:
            out.append((name, data if data == "[DONE]" else orjson.loads(data)))
    return out


_RESPONSE_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
_MESSAGE_EVENT: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


def assert_answer(case: Case, response: httpx.Response) -> None:
    """A normal, whole answer in the case's API shape, as its SDK parses it."""
    assert response.status_code == 200, response.text
    if case.stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert_whole_stream(case, sse_events(response.text))
        return
    body = response.json()
    if case.endpoint == "embeddings":
        parsed = CreateEmbeddingResponse.model_validate(body)
        assert [d.index for d in parsed.data] == [0, 1] and all(d.embedding for d in parsed.data)
    elif case.endpoint == "rerank":  # no SDK types it: the shape rerank.py documents
        assert body["id"].startswith("rerank-") and body["model"] == case.body["model"]
        results = body["results"]
        assert sorted(x["index"] for x in results) == [0, 1, 2]
        assert all(x.keys() == {"index", "relevance_score"} for x in results)
        assert [x["relevance_score"] for x in results] == sorted(
            (x["relevance_score"] for x in results), reverse=True
        )
        assert results[0]["index"] == 1  # "a cat" shares most words with the query, first of the ties
    elif case.endpoint == "responses":
        answer = Response.model_validate(body)
        assert answer.status == "completed" and answer.output_text and answer.error is None
    elif case.endpoint == "messages":
        message = Message.model_validate(body)
        assert message.stop_reason == "end_turn" and message.content[0].type == "text"
    else:
        assert ChatCompletion.model_validate(body).choices[0].message.content


def assert_whole_stream(case: Case, events: list[tuple[str | None, Any]]) -> None:
    """Every event parses as the SDK's, and the stream ends the normal way."""
    if case.endpoint == "responses":
        for name, data in events:
            assert name == data["type"]
            _RESPONSE_EVENT.validate_python(data)
        assert events[-1][0] == "response.completed"
        assert not any(name in ("response.failed", "error") for name, _ in events)
    elif case.endpoint == "messages":
        for name, data in events:
            assert name == data["type"]
            if name != "ping":  # the SDK skips pings: not in its union
                _MESSAGE_EVENT.validate_python(data)
        assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
        assert not any(name == "error" for name, _ in events)
    else:
        assert events[-1] == (None, "[DONE]")
        for _, data in events[:-1]:
            ChatCompletionChunk.model_validate(data)


# -- before the commit point: another provider answers ------------------------------------------


@pytest.mark.parametrize("fault", ["status=500", "reset"])
@pytest.mark.parametrize("case", EVERY_WAY, ids=ids(EVERY_WAY))
def test_a_failing_provider_is_failed_over_in_the_clients_api(
    sim: Sim, router: Router, tmp_path: Path, case: Case, fault: str
) -> None:
    r, a, b = pair(sim, router, a={"faults": fault}, ledger_file=tmp_path / "l.jsonl")
    response = post(r, case)
    assert_answer(case, response)
    assert response.headers["x-router-attempts"] == "2"
    assert response.headers["x-router-provider"] == "b"
    assert served(a, b) == [1, 1]
    # One request, one record: settled for b, the provider that answered, under its endpoint.
    (record,) = records(r)
    assert (record["endpoint"], record["provider"], record["outcome"]) == (case.endpoint, "b", "completed")


@pytest.mark.parametrize("case", EVERY_WAY, ids=ids(EVERY_WAY))
def test_when_every_provider_fails_the_error_reads_in_the_clients_api(
    sim: Sim, router: Router, tmp_path: Path, case: Case
) -> None:
    r, a, b = pair(
        sim, router, a={"faults": "status=500"}, b={"faults": "status=503"}, ledger_file=tmp_path / "l.jsonl"
    )
    response = post(r, case)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/json")  # never a stream begun
    body = response.json()
    if case.endpoint == "messages":
        ErrorResponse.model_validate(body)
        assert body["type"] == "error" and body["error"]["type"] == "api_error"
    else:
        assert body["error"]["type"] and body["error"]["message"]
    assert response.headers["x-router-attempts"] == str(sum(served(a, b)))
    (record,) = records(r)
    assert (record["endpoint"], record["outcome"], record["status"]) == (case.endpoint, "error", 502)


# -- after the commit point: the API's error event, never its normal ending ---------------------

CUT = [RESPONSES_STREAM, MESSAGES_STREAM, CHAT_STREAM]


def assert_broken_stream(case: Case, events: list[tuple[str | None, Any]]) -> None:
    names = [name for name, _ in events]
    if case.endpoint == "responses":
        assert "response.completed" not in names and "response.incomplete" not in names
        assert names[-2:] == ["response.failed", "error"]
        failed, error = events[-2][1], events[-1][1]
        _RESPONSE_EVENT.validate_python(failed)
        _RESPONSE_EVENT.validate_python(error)
        assert failed["response"]["status"] == "failed" and failed["response"]["error"]["message"]
        assert error["error"]["code"] == "upstream_error"
        text = "".join(d["delta"] for n, d in events if n == "response.output_text.delta")
    elif case.endpoint == "messages":
        assert "message_stop" not in names and "message_delta" not in names
        assert names[-1] == "error"
        error = events[-1][1]
        assert error["type"] == "error" and error["error"]["type"] == "api_error"
        text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    else:
        assert (None, "[DONE]") not in events
        assert events[-1][1]["error"]["code"] == "upstream_error"
        text = "".join(d["choices"][0]["delta"].get("content") or "" for _, d in events[:-1] if d["choices"])
    assert text  # the client saw part of the answer: that is why nothing could be retried


@pytest.mark.parametrize("case", CUT, ids=ids(CUT))
def test_a_stream_cut_mid_answer_ends_with_the_apis_error_event_and_is_settled(
    sim: Sim, router: Router, tmp_path: Path, case: Case
) -> None:
    r, a, b = pair(sim, router, a={"faults": "cut=2", "chunk_gap": 0.02}, ledger_file=tmp_path / "l.jsonl")
    response = post(r, case)
    assert response.status_code == 200
    assert_broken_stream(case, sse_events(response.text))
    assert served(a, b) == [1, 0]  # bytes reached the client: nothing is retried
    (record,) = records(r)
    assert record["settlement_key"] == response.headers["x-settlement-key"]
    assert (record["endpoint"], record["provider"], record["outcome"]) == (case.endpoint, "a", "error")
    assert record["completion_tokens"] > 0  # what was relayed before the cut is paid for


def test_sdk_clients_raise_on_a_stream_cut_mid_answer(sim: Sim, router: Router) -> None:
    """The openai and anthropic SDKs read the error events as errors, not as a quiet end."""
    r, _, _ = pair(sim, router, a={"faults": "cut=2", "chunk_gap": 0.02})
    client = openai.OpenAI(base_url=r.url + "/v1", api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.responses.create(model="gpt-4o", input="Hello there", stream=True):
            pass
    claude = anthropic.Anthropic(base_url=r.url, api_key=CLIENT_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as raised:
        for _ in claude.messages.create(model="gpt-4o", max_tokens=64, messages=HELLO, stream=True):  # type: ignore[arg-type]
            pass
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
