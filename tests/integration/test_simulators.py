"""The simulators speak each provider's dialect and inject faults, over real sockets."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from router.sim import SimServer

Sim = Callable[..., SimServer]
AUTH = {"Authorization": "Bearer xh-test"}
HELLO = [{"role": "user", "content": "Hello there"}]


def post(server: SimServer, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.post(server.base_url + "/chat/completions", json=body, headers=headers, timeout=5, **kwargs)


def events(text: str) -> list[Any]:
    out = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            data = block[6:]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def test_trinity_path_has_no_v1_and_answers_with_settlement_headers(sim: Sim) -> None:
    trinity = sim("trinity")
    assert not trinity.base_url.endswith("/v1")
    response = post(
        trinity,
        {"model": "gpt-4o", "messages": HELLO},
        headers={"X-Request-Id": "r-1", "X-Idempotency-Key": "order-7"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "r-1"
    again = post(trinity, {"model": "gpt-4o", "messages": HELLO}, headers={"X-Idempotency-Key": "order-7"})
    assert again.headers["x-settlement-key"] == response.headers["x-settlement-key"]  # settled once
    other = post(trinity, {"model": "gpt-4o", "messages": HELLO})
    assert other.headers["x-settlement-key"] != response.headers["x-settlement-key"]
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "This is a simulated answer from trinity (gpt-4o)."
    assert body["usage"]["completion_tokens"] == 8
    assert httpx.post(f"http://127.0.0.1:{trinity.port}/v1/chat/completions", json={}).status_code == 404


@pytest.mark.parametrize(
    ("model", "extra", "param"),
    [
        ("gpt-4o", {"thinking_enabled": True}, "thinking_enabled"),
        ("gpt-5.1", {"reasoning_effort": "low"}, "reasoning_effort"),
        ("gemini-3-pro-preview", {"thinking_enabled": False}, "thinking_enabled"),
        ("gemini-3-pro-preview", {"reasoning_effort": "minimal"}, "reasoning_effort"),
        (
            "doubao-seed-1-6-thinking-agent-preview",
            {"max_tokens": 5, "max_completion_tokens": 5},
            "max_completion_tokens",
        ),
        ("doubao-seed-1-6-thinking-agent-preview", {"max_completion_tokens": 70000}, "max_completion_tokens"),
        ("doubao-seed-1-6-thinking-agent-preview", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ("doubao-seed-1-6-thinking-agent-preview", {"top_logprobs": 3}, "top_logprobs"),
        (
            "doubao-seed-1-6-thinking-agent-preview",
            {"stream_options": {"include_usage": True}},
            "stream_options",
        ),
    ],
)
def test_trinity_rejects_what_its_document_excludes(
    sim: Sim, model: str, extra: dict[str, Any], param: str
) -> None:
    response = post(sim("trinity"), {"model": model, "messages": HELLO, **extra})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param


def test_trinity_accepts_what_its_document_allows(sim: Sim) -> None:
    trinity = sim("trinity")
    for model, extra in [
        ("doubao-seed-1-6-thinking-agent-preview", {"thinking_enabled": True, "reasoning_effort": "medium"}),
        ("gemini-3-pro-preview", {"thinking_enabled": True, "reasoning_effort": "high"}),
        ("gemini-3-flash-preview", {"reasoning_effort": "minimal"}),
    ]:
        assert post(trinity, {"model": model, "messages": HELLO, **extra}).status_code == 200


def test_trinity_streams_usage_only_when_asked(sim: Sim) -> None:
    trinity = sim("trinity", chunks=3)
    plain = events(post(trinity, {"model": "gpt-4o", "messages": HELLO, "stream": True}).text)
    assert plain[-1] == "[DONE]"
    assert not any("usage" in e for e in plain[:-1])
    with_usage = events(
        post(
            trinity,
            {"model": "gpt-4o", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
        ).text
    )
    assert with_usage[-2]["choices"] == [] and with_usage[-2]["usage"]["prompt_tokens"] > 0
    assert with_usage[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(e["choices"][0]["delta"].get("content", "") for e in with_usage[:-2] if e["choices"])
    assert content == "This is a simulated answer from trinity (gpt-4o)."


def test_unknown_models_get_the_resellers_no_channel_answer(sim: Sim) -> None:
    response = post(sim("chenyu"), {"model": "doubao-seed-2-0-lite", "messages": HELLO})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_not_found"
    assert "无可用渠道" in response.json()["error"]["message"]
    assert post(sim("real200"), {"model": "gpt-5", "messages": HELLO}).status_code == 404


def test_chenyu_takes_dated_ids_and_only_its_documented_roles(sim: Sim) -> None:
    chenyu = sim("chenyu")
    assert chenyu.base_url.endswith("/v1")
    ok = post(chenyu, {"model": "doubao-seed-2-0-lite-260428", "messages": HELLO})
    assert ok.json()["model"] == "doubao-seed-2-0-lite-260428"
    tool = post(
        chenyu,
        {
            "model": "doubao-seed-2-0-lite-260428",
            "messages": [*HELLO, {"role": "tool", "tool_call_id": "c", "content": "1"}],
        },
    )
    assert tool.status_code == 400 and "role" in tool.json()["error"]["message"]


def test_real200_ranges_and_chunk_shape(sim: Sim) -> None:
    real200 = sim("real200")
    bad = post(real200, {"model": "gpt-4o", "messages": HELLO, "presence_penalty": 3})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    chunks = events(post(real200, {"model": "gpt-4o", "messages": HELLO, "stream": True}).text)
    assert "model" not in chunks[0] and "created" not in chunks[0]  # as its document's stream example
    assert not any(isinstance(c, dict) and "usage" in c for c in chunks)


def test_keys_are_checked(sim: Sim) -> None:
    server = sim("real200", keys=("sk-real200-good",))
    assert post(server, {"model": "gpt-4o", "messages": HELLO}).status_code == 401
    good = post(
        server, {"model": "gpt-4o", "messages": HELLO}, headers={"Authorization": "Bearer sk-real200-good"}
    )
    assert good.status_code == 200
    assert (
        httpx.post(server.base_url + "/chat/completions", json={}).json()["error"]["type"]
        == "invalid_api_key"
    )


def test_tool_calls_round_trip(sim: Sim) -> None:
    server = sim("real200")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    first = post(server, {"model": "gpt-4o", "messages": HELLO, "tools": tools}).json()["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    call = first["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup"
    follow = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "42"},
    ]
    second = post(server, {"model": "gpt-4o", "messages": follow, "tools": tools}).json()["choices"][0]
    assert second["message"]["content"].startswith("The tool answered with 2 characters.")


def test_max_tokens_and_json_mode(sim: Sim) -> None:
    server = sim("real200")
    short = post(server, {"model": "gpt-4o", "messages": HELLO, "max_tokens": 3}).json()["choices"][0]
    assert short["finish_reason"] == "length" and short["message"]["content"] == "This is a"
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    structured = post(server, {"model": "gpt-4o", "messages": HELLO, "response_format": fmt}).json()
    assert "answer" in orjson.loads(structured["choices"][0]["message"]["content"])


def streamed(server: SimServer, body: dict[str, Any]) -> tuple[str, list[Any]]:
    chunks = events(post(server, {**body, "stream": True}).text)
    assert chunks[-1] == "[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"])
    return text, chunks[:-1]


def test_capabilities_are_refused_as_documented(sim: Sim) -> None:
    image = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "?"}, {"type": "image_url", "image_url": {"url": "u"}}],
        }
    ]
    refused = post(sim("real200"), {"model": "gpt-4o", "messages": image})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "messages[0].content[1].type"
    trinity = sim("trinity")
    assert post(trinity, {"model": "gpt-4o", "messages": HELLO, "n": 2}).json()["error"]["param"] == "n"
    assert post(trinity, {"model": "gpt-4o", "messages": image}).status_code == 200
    chenyu = sim("chenyu")
    assert post(chenyu, {"model": "doubao-seed-1-6-vision-250815", "messages": image}).status_code == 200
    text_model = post(chenyu, {"model": "doubao-seed-2-0-lite-260428", "messages": image})
    assert (
        text_model.status_code == 400 and text_model.json()["error"]["param"] == "messages[0].content[1].type"
    )


def test_structured_output_validates_and_streams_the_same_json(sim: Sim) -> None:
    server = sim("real200", chunks=5)
    schema = {
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"type": "string"}},
            "final_answer": {"type": "string"},
        },
        "required": ["steps", "final_answer"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "math", "schema": schema, "strict": True}}
    body = {"model": "gpt-4o", "messages": HELLO, "response_format": fmt}
    content = post(server, body).json()["choices"][0]["message"]["content"]
    parsed = orjson.loads(content)
    assert set(parsed) == {"steps", "final_answer"} and "real200 (gpt-4o)" in parsed["final_answer"]
    text, chunks = streamed(server, body)
    assert text == content
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")) == 5


def test_trinity_stop_and_logprobs_agree_in_both_shapes(sim: Sim) -> None:
    trinity = sim("trinity", chunks=3)
    body = {"model": "gpt-4o", "messages": HELLO, "stop": ["answer"], "logprobs": True, "top_logprobs": 2}
    choice = post(trinity, body).json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("This is a simulated ", "stop")
    entries = choice["logprobs"]["content"]
    assert [e["token"] for e in entries] == ["This", " is", " a", " simulated "]
    assert all(len(e["top_logprobs"]) == 2 for e in entries)
    text, chunks = streamed(trinity, body)
    assert text == "This is a simulated "
    in_chunks = [
        e for c in chunks if c["choices"] for e in (c["choices"][0].get("logprobs") or {}).get("content", [])
    ]
    assert in_chunks == entries


# -- faults ---------------------------------------------------------------------------------


def test_status_fault_with_retry_after_and_times(sim: Sim) -> None:
    server = sim("trinity", faults="status=429,retry_after=2,times=1")
    limited = post(server, {"model": "gpt-4o", "messages": HELLO})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert post(server, {"model": "gpt-4o", "messages": HELLO}).status_code == 200
    assert server.faults_injected == 1


def test_reset_before_headers(sim: Sim) -> None:
    server = sim("trinity", faults="reset")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        post(server, {"model": "gpt-4o", "messages": HELLO})


def test_silent_and_slow_first_token(sim: Sim) -> None:
    server = sim("trinity", faults="silent,times=1")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "gpt-4o", "messages": HELLO},
            headers=AUTH,
            timeout=0.3,
        )
    server.set_faults("slow_first_token=300ms")
    started = time.monotonic()
    post(server, {"model": "gpt-4o", "messages": HELLO})
    assert time.monotonic() - started >= 0.3


def test_stream_faults(sim: Sim) -> None:
    server = sim("trinity", chunks=6)
    body = {"model": "gpt-4o", "messages": HELLO, "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        post(server, {**body, "sim_fault": "cut=2"})
    malformed = post(server, body, headers={"X-Sim-Fault": "malformed=2"}).text
    with pytest.raises(orjson.JSONDecodeError):
        events(malformed)
    no_done = post(server, {**body, "sim_fault": "no_done"}).text
    assert "[DONE]" not in no_done and '"finish_reason":"stop"' in no_done
    error = events(post(server, {**body, "sim_fault": "stream_error=1"}).text)
    assert "error" in error[-1] and "[DONE]" not in error
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST",
            server.base_url + "/chat/completions",
            json={**body, "sim_fault": "stall=2"},
            headers=AUTH,
            timeout=httpx.Timeout(5, read=0.3),
        ) as response,
    ):
        for _ in response.iter_bytes():
            pass


def test_control_endpoints(sim: Sim) -> None:
    server = sim("chenyu")
    base = f"http://127.0.0.1:{server.port}/_sim"
    assert httpx.post(base + "/faults", content="status=500").status_code == 200
    assert post(server, {"model": "doubao-seed-2-0-lite-260428", "messages": HELLO}).status_code == 500
    stats = httpx.get(base + "/stats").json()
    assert (stats["requests"], stats["faults"]) == (1, 1) and stats["connections"] >= 1
    assert httpx.get(base + "/requests").json()[0]["body"]["model"] == "doubao-seed-2-0-lite-260428"
    assert httpx.post(base + "/faults", content="bogus").status_code == 400
    assert httpx.post(base + "/reset").status_code == 200
    assert httpx.get(base + "/stats").json()["requests"] == 0


def test_a_paced_whole_answer_takes_as_long_as_its_stream(sim: Sim) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}]}
    seconds = {}
    for paced in (False, True):
        server = sim("trinity", chunks=4, chunk_gap=0.05, paced_whole=paced)
        started = time.monotonic()
        response = httpx.post(server.base_url + "/chat/completions", json=body, headers=AUTH)
        seconds[paced] = time.monotonic() - started
        assert response.status_code == 200
    assert seconds[False] < 0.15 <= 0.2 <= seconds[True]  # four pauses of 50 ms, or none
