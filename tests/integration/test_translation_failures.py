"""A chat stream a Messages client cannot be given — a tool call without a name, arguments that
are no JSON object — ends its stream with Anthropic's error event and is settled as an error:
not recorded, counted, nor kept for a replay as a completed answer."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from router import config as configuration
from router import ledger
from tests.conftest import CLIENT_KEY, RouterThread
from tests.scripted import ScriptedUpstream, Step, chunk

USAGE = (
    b'data: {"id":"s","object":"chat.completion.chunk","model":"scripted","choices":[],'
    b'"usage":{"prompt_tokens":11,"completion_tokens":7}}\n\n'
)
SCRIPTS: dict[str, list[Step]] = {
    "a tool call without a name": [
        (0, chunk(content="hi")),
        (0, chunk(tool_calls=[{"index": 0, "id": "c1", "function": {"arguments": "{}"}}])),
        (0, chunk(finish="tool_calls")),
        (0, USAGE),
        (0, b"data: [DONE]\n\n"),
    ],
    "arguments that are no JSON object": [
        (0, chunk(content="hi")),
        (0, chunk(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "[1]"}}])),
        (0, chunk(finish="tool_calls")),
        (0, USAGE),
        (0, b"data: [DONE]\n\n"),
    ],
}
BODY = {"model": "gpt-4o", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture(params=sorted(SCRIPTS))
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RouterThread, ScriptedUpstream]]:
    with ScriptedUpstream(SCRIPTS[request.param]) as upstream:
        config = configuration.parse(
            textwrap.dedent(f"""
            state: {{url: "memory://", ledger_file: {tmp_path / "ledger.jsonl"}}}
            clients: [{{name: team, key: {CLIENT_KEY}}}]
            routing: {{max_attempts: 1, timeouts: {{first_token: 2s, idle: 2s, total: 6s}}}}
            providers:
              s:
                base_url: "{upstream.base_url}"
                keys: [s-secret]
                dialect: real200
                models: {{gpt-4o: {{}}}}
            """),
            env={},
        )
        router = RouterThread(config).start()
        try:
            yield router, upstream
        finally:
            router.stop()


def test_the_stream_ends_with_an_error_event_and_settles_as_an_error(
    served: tuple[RouterThread, ScriptedUpstream],
) -> None:
    router, upstream = served
    headers = {"x-api-key": CLIENT_KEY, "X-Idempotency-Key": "k1"}
    errors_before = stream_errors(router)
    answer = httpx.post(router.url + "/v1/messages", json=BODY, headers=headers, timeout=10)
    assert answer.status_code == 200
    assert answer.text.rstrip().endswith("}") and "event: error" in answer.text
    assert "message_stop" not in answer.text and "message_delta" not in answer.text
    (record,) = asyncio.run(ledger.read(router.config))
    assert (record["outcome"], record["endpoint"]) == ("error", "messages")
    assert stream_errors(router) == errors_before + 1
    # An answer that ended in error is not kept: the retry runs again, it is not replayed.
    again = httpx.post(router.url + "/v1/messages", json=BODY, headers=headers, timeout=10)
    assert "idempotent-replayed" not in again.headers, again.text[:300]
    assert again.status_code == 200, again.text[:300]
    assert upstream.requests == 2


def stream_errors(router: RouterThread) -> float:
    """router_stream_outcomes_total{outcome="error"}: one registry per process, so read as a delta."""
    for line in httpx.get(router.url + "/metrics").text.splitlines():
        if line.startswith('router_stream_outcomes_total{outcome="error"}'):
            return float(line.rpartition(" ")[2])
    return 0.0
