"""The proxy path over real sockets: router in front of simulators of each dialect."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from router import responses
from router.sim import SimServer
from router.upstream import Upstream
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml
from tests.scripted import ScriptedUpstream, chunk

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
FAST = "{timeouts: {connect: 1s, first_token: 1s, idle: 500ms, total: 5s}}"


@pytest.fixture
def three(sim: Sim, router: Router) -> tuple[RouterThread, dict[str, SimServer]]:
    """The shipped providers' rules, each provider a simulator of its dialect."""
    sims = {
        "trinity": sim("trinity", chunks=4),
        "chenyu": sim("chenyu", chunks=4),
        "real200": sim("real200", chunks=4),
    }
    text = config_yaml(
        provider_yaml(
            "trinity",
            sims["trinity"],
            {
                "gpt-4o": "{params: {drop: [thinking_enabled, reasoning_effort]}}",
                "gemini-3-pro-preview": "{params: {allowed: {reasoning_effort: [low, medium, high]}}}",
            },
            forward_headers="[X-Idempotency-Key]",
        ),
        provider_yaml(
            "chenyu",
            sims["chenyu"],
            {"doubao-seed-2-0-lite": "{upstream: doubao-seed-2-0-lite-260428}"},
            stream_usage="false",
            params="{rename: {max_completion_tokens: max_tokens}}",
        ),
        provider_yaml("real200", sims["real200"], ["claude-sonnet-4", "broken"], stream_usage="false"),
        routing=FAST,
    )
    return router(text), sims


def chat(
    r: RouterThread,
    body: dict[str, Any],
    *,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> httpx.Response:
    return httpx.post(r.url + path, json=body, headers={**AUTH, **(headers or {})}, timeout=10)


def data_events(text: str) -> list[Any]:
    return [
        b[6:] if b[6:] == "[DONE]" else orjson.loads(b[6:])
        for b in text.split("\n\n")
        if b.startswith("data: ")
    ]


# -- the happy path ----------------------------------------------------------------------------


def test_non_streaming_answer_and_response_headers(three: Any) -> None:
    r, sims = three
    response = chat(
        r, {"model": "doubao-seed-2-0-lite", "messages": HELLO}, headers={"X-Request-Id": "trace-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "doubao-seed-2-0-lite-260428"  # what the answering provider reported
    assert body["choices"][0]["message"]["content"].startswith("This is a simulated answer from chenyu")
    assert response.headers["x-request-id"] == "trace-1"
    assert response.headers["x-router-provider"] == "chenyu"
    assert response.headers["x-router-attempts"] == "1"
    timing = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    assert set(timing) == {"router", "upstream"} and float(timing["router"]) >= 0
    assert sims["chenyu"].requests[-1].headers["x-request-id"] == "trace-1"


def test_both_paths_and_invalid_request_ids_are_replaced(three: Any) -> None:
    r, _ = three
    response = chat(
        r,
        {"model": "gpt-4o", "messages": HELLO},
        path="/chat/completions",
        headers={"X-Request-Id": "bad id with spaces"},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"].startswith("req_")


def test_translation_reaches_each_provider(three: Any) -> None:
    r, sims = three
    chat(r, {"model": "doubao-seed-2-0-lite", "messages": HELLO, "max_completion_tokens": 50, "top_k": 3})
    sent = sims["chenyu"].requests[-1].body
    assert sent["model"] == "doubao-seed-2-0-lite-260428"
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent
    assert sent["top_k"] == 3  # unknown fields pass through
    response = chat(
        r, {"model": "gpt-4o", "messages": HELLO, "thinking_enabled": True, "reasoning_effort": "high"}
    )
    assert response.status_code == 200  # the simulator would have refused them
    assert "thinking_enabled" not in sims["trinity"].requests[-1].body


def test_a_value_the_model_does_not_take_is_refused_before_anything_is_sent(three: Any) -> None:
    r, sims = three
    response = chat(r, {"model": "gemini-3-pro-preview", "messages": HELLO, "reasoning_effort": "minimal"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "reasoning_effort"
    assert sims["trinity"].chat_requests == 0


def test_what_goes_upstream_and_what_never_does(three: Any) -> None:
    r, sims = three
    chat(
        r,
        {"model": "gpt-4o", "messages": HELLO},
        headers={
            "Cookie": "session=client-cookie",
            "X-Conversation-Id": "conv-9",
            "X-Idempotency-Key": "idem-1",
            "X-Custom-Thing": "nope",
            "Proxy-Authorization": "Basic x",
        },
    )
    seen = sims["trinity"].requests[-1].headers
    assert seen["authorization"] == "Bearer trinity-secret-key"  # ours, never the client's
    assert CLIENT_KEY not in str(seen)
    assert "cookie" not in seen and "proxy-authorization" not in seen and "x-custom-thing" not in seen
    assert seen["x-conversation-id"] == "conv-9"
    assert seen["x-idempotency-key"] == "idem-1"  # trinity's forward_headers
    chat(r, {"model": "claude-sonnet-4", "messages": HELLO}, headers={"X-Idempotency-Key": "idem-2"})
    assert "x-idempotency-key" not in sims["real200"].requests[-1].headers  # not in real200's


# -- streams -----------------------------------------------------------------------------------


def test_stream_asks_for_usage_and_hides_the_usage_chunk(three: Any) -> None:
    r, sims = three
    response = chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = data_events(response.text)
    assert chunks[-1] == "[DONE]"
    assert all(c["choices"] for c in chunks[:-1])  # chunk.choices[0] never breaks
    assert sims["trinity"].requests[-1].body["stream_options"] == {"include_usage": True}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert text == "This is a simulated answer from trinity (gpt-4o)."


def test_stream_shows_usage_when_the_client_asked(three: Any) -> None:
    r, _ = three
    chunks = data_events(
        chat(
            r,
            {"model": "gpt-4o", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
        ).text
    )
    assert chunks[-2]["choices"] == [] and chunks[-2]["usage"]["total_tokens"] > 0


def test_providers_without_stream_options_never_get_them(three: Any) -> None:
    r, sims = three
    chunks = data_events(
        chat(
            r,
            {
                "model": "claude-sonnet-4",
                "messages": HELLO,
                "stream": True,
                "stream_options": {"include_usage": True},
            },
        ).text
    )
    assert chunks[-1] == "[DONE]"
    assert "stream_options" not in sims["real200"].requests[-1].body


def test_a_stream_without_done_is_finalised(three: Any) -> None:
    r, _ = three
    chunks = data_events(
        chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim_fault": "no_done"}).text
    )
    assert chunks[-1] == "[DONE]"
    started = time.monotonic()
    held = data_events(
        chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim_fault": "no_done=hold"}).text
    )
    assert held[-1] == "[DONE]"
    assert time.monotonic() - started < 3  # promptly: a short grace after the finish, not the idle timeout


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("cut=2", "upstream_error"),
        ("stall=2", "upstream_timeout"),
        ("stream_error=2", "upstream_error"),
    ],
)
def test_a_stream_that_breaks_after_commit_ends_with_an_error_event_and_no_done(
    sim: Sim, router: Router, fault: str, code: str
) -> None:
    server = sim("trinity", chunks=4, chunk_gap=0.02)  # the gap makes the commit happen before the fault
    r = router(config_yaml(provider_yaml("trinity", server, ["gpt-4o"]), routing=FAST))
    response = chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim_fault": fault})
    assert response.status_code == 200
    chunks = data_events(response.text)
    assert "[DONE]" not in chunks
    assert chunks[-1]["error"]["code"] == code
    assert chunks[-1]["error"]["type"] == ("api_error")
    assert chunks[1]["choices"][0]["delta"]["content"]  # the client did see part of the answer


@pytest.mark.parametrize(
    ("fault", "status", "code", "attempts"),
    [
        ("reset", 502, "upstream_error", 3),  # the only target, tried max_attempts times
        ("status=500", 502, "upstream_error", 3),
        ("silent", 504, "upstream_timeout", 1),  # a silent target costs one first-token timeout
        ("slow_first_token=3s", 504, "upstream_timeout", 1),
    ],
)
def test_a_stream_that_fails_before_commit_is_a_plain_error(
    three: Any, fault: str, status: int, code: str, attempts: int
) -> None:
    r, sims = three
    started = time.monotonic()
    response = chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim_fault": fault})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.headers["x-router-attempts"] == str(attempts)
    assert sims["trinity"].chat_requests == attempts
    assert time.monotonic() - started < 3  # bounded by first_token (1s), not the total deadline


def test_provider_connections_are_reused_across_streams_and_answers(sim: Sim, router: Router) -> None:
    server = sim("trinity", chunks=3)
    r = router(config_yaml(provider_yaml("trinity", server, ["gpt-4o"]), routing=FAST))
    with httpx.Client(headers=AUTH) as client:
        for stream in (True, False, True, True, False):
            body = {"model": "gpt-4o", "messages": HELLO, "stream": stream}
            assert client.post(r.url + "/v1/chat/completions", json=body).status_code == 200
    assert server.chat_requests == 5
    assert server.connections_accepted == 1  # streams end at [DONE] and still give their connection back


def test_with_n_choices_the_stream_ends_only_when_every_choice_finished(
    sim: Sim, router: Router, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(responses, "FINISH_GRACE", 0.2)
    server = sim("real200", chunks=1, chunk_gap=0.4)  # choice 1 goes on 0.4 s after choice 0 finished
    r = router(config_yaml(provider_yaml("real200", server, ["gpt-4o"]), routing=FAST))
    chunks = data_events(chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "n": 2}).text)
    assert chunks[-1] == "[DONE]"
    finished = [c["choices"][0]["index"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert finished == [0, 1]
    second = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1] if c["choices"][0]["index"]
    )
    assert second.endswith(" more")


def test_an_empty_finish_reason_is_not_a_finish(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responses, "FINISH_GRACE", 0.2)
    pieces = [(0, chunk(finish="", content=word)) for word in ("one ", "two ")]
    script = [
        *pieces,
        (0.35, chunk(finish="", content="three")),
        (0, chunk(finish="stop")),
        (0, b"data: [DONE]\n\n"),
    ]
    with ScriptedUpstream(script) as upstream:
        r = router(
            config_yaml(
                f"  p: {{base_url: {upstream.base_url}, keys: [k], models: {{m: {{}}}}}}\n", routing=FAST
            )
        )
        chunks = data_events(chat(r, {"model": "m", "messages": HELLO, "stream": True}).text)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1]) == "one two three"
    assert chunks[-1] == "[DONE]"


@pytest.mark.parametrize("fault", ["malformed=1", "malformed=3"])  # before and after the commit point
def test_a_malformed_event_is_dropped_counted_and_the_stream_goes_on(
    sim: Sim, router: Router, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    server = sim("trinity", chunks=4, chunk_gap=0.02)
    r = router(config_yaml(provider_yaml("trinity", server, ["gpt-4o"]), routing=FAST))
    before = _dropped("trinity", r)
    with caplog.at_level(logging.WARNING, logger="router.stream"):
        response = chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True, "sim_fault": fault})
    chunks = data_events(response.text)
    assert response.status_code == 200 and chunks[-1] == "[DONE]"
    assert all("error" not in c for c in chunks[:-1])
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert response.headers["x-router-attempts"] == "1" and server.chat_requests == 1
    assert _dropped("trinity", r) == before + 1
    dropped = [rec for rec in caplog.records if rec.getMessage() == "dropped malformed stream events"]
    assert len(dropped) == 1 and dropped[0].fields == {"provider": "trinity", "dropped": 1}  # type: ignore[attr-defined]


def _dropped(provider: str, r: RouterThread) -> float:
    text = httpx.get(r.url + "/metrics", timeout=5).text
    line = f'router_stream_events_dropped_total{{provider="{provider}"}} '
    return next((float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)), 0.0)


def test_a_provider_that_sends_nothing_valid_meets_its_timeouts(router: Router) -> None:
    garbage = [(0.1, b'data: {"choices": [{"delta": {"cont\n\n')] * 40  # 4 s of broken events
    script = [(0, chunk(role="assistant")), *garbage]
    with ScriptedUpstream(script) as upstream:
        r = router(
            config_yaml(
                f"  p: {{base_url: {upstream.base_url}, keys: [k], models: {{m: {{}}}}}}\n",
                routing="{max_attempts: 1, timeouts: {first_token: 1s, idle: 500ms, total: 10s}}",
            )
        )
        started = time.monotonic()
        response = chat(r, {"model": "m", "messages": HELLO, "stream": True})
        seconds = time.monotonic() - started
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert seconds < 2.5  # first_token (1 s), though broken events kept coming for 4 s


def test_usage_that_comes_late_is_still_waited_for(router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(responses, "FINISH_GRACE", 0.2)
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}\n\n'
    script = [(0, chunk(content="hi")), (0, chunk(finish="stop")), (0.35, usage), (0, b"data: [DONE]\n\n")]
    with ScriptedUpstream(script) as upstream:
        r = router(
            config_yaml(
                f"  p: {{base_url: {upstream.base_url}, keys: [k], models: {{m: {{}}}}}}\n", routing=FAST
            )
        )
        chunks = data_events(
            chat(
                r,
                {"model": "m", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}},
            ).text
        )
    assert chunks[-2]["usage"]["total_tokens"] == 4
    assert chunks[-1] == "[DONE]"


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_before_any_answer_stops_the_provider_request(
    sim: Sim, router: Router, stream: bool
) -> None:
    server = sim("trinity", faults="silent")
    r = router(
        config_yaml(
            provider_yaml("trinity", server, ["gpt-4o"]),
            routing="{timeouts: {first_token: 10s, response: 10s, total: 20s}}",
        )
    )
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            r.url + "/v1/chat/completions",
            headers=AUTH,
            timeout=0.3,
            json={"model": "gpt-4o", "messages": HELLO, "stream": stream},
        )
    left = time.monotonic()
    while server.open_connections and time.monotonic() - left < 5:
        time.sleep(0.02)
    assert server.open_connections == 0
    assert time.monotonic() - left < 1  # not the 10 s the timeouts would allow


def test_connect_timeout(router: Router) -> None:
    with socket.socket() as full:  # a listener whose accept queue is full: connects hang
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        held = socket.create_connection(full.getsockname())
        try:
            url = f"http://127.0.0.1:{full.getsockname()[1]}"
            r = router(
                config_yaml(
                    f"  p: {{base_url: '{url}', keys: [k], models: {{m: {{}}}}}}\n",
                    routing="{timeouts: {connect: 300ms, first_token: 5s, total: 10s}}",
                )
            )
            started = time.monotonic()
            response = chat(r, {"model": "m", "messages": HELLO})
            assert response.status_code == 504
            assert response.json()["error"]["message"] == "p: timed out connecting"
            assert time.monotonic() - started < 2
        finally:
            held.close()


def test_a_client_leaving_mid_upload_is_not_an_error(three: Any, caplog: pytest.LogCaptureFixture) -> None:
    r, sims = three
    with socket.create_connection(("127.0.0.1", r.port)) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
            b"Authorization: Bearer " + CLIENT_KEY.encode() + b'\r\n\r\n{"model":'
        )
        time.sleep(0.2)
    time.sleep(0.3)
    assert [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.WARNING] == []
    assert sum(s.chat_requests for s in sims.values()) == 0


def test_client_disconnect_mid_stream_closes_the_provider_stream(sim: Sim, router: Router) -> None:
    server = sim("trinity", chunks=50, chunk_gap=0.05)
    r = router(config_yaml(provider_yaml("trinity", server, ["gpt-4o"]), routing=FAST))
    with httpx.stream(
        "POST",
        r.url + "/v1/chat/completions",
        headers=AUTH,
        timeout=5,
        json={"model": "gpt-4o", "messages": HELLO, "stream": True},
    ) as response:
        for _ in response.iter_lines():
            break
    deadline = time.monotonic() + 3
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.open_connections == 0  # the router dropped its provider connection


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "fault", "status", "check"),
    [
        ("claude-sonnet-4", None, 400, "presence_penalty must be between -2 and 2"),
        ("gpt-4o", "status=429,retry_after=7", 429, "rate_limit_exceeded"),
        ("gpt-4o", "status=500", 502, "trinity: Internal server error"),
        ("gpt-4o", "status=401,message=Incorrect API key provided: trinity-secret-key", 502, "credentials"),
        ("broken", None, 502, "real200: The model broken does not exist"),  # configured, not served
    ],
)
def test_provider_errors_are_mapped(
    three: Any, model: str, fault: str | None, status: int, check: str
) -> None:
    r, _ = three
    body: dict[str, Any] = {"model": model, "messages": HELLO}
    if fault:
        body["sim_fault"] = fault
    if model == "claude-sonnet-4":
        body["presence_penalty"] = 3
    response = chat(r, body)
    assert response.status_code == status
    assert check in response.text
    assert "trinity-secret-key" not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"
        assert response.json()["error"]["type"] == "rate_limit_exceeded"
    if status == 502:
        assert response.headers["x-router-provider"] in ("trinity", "real200")


def test_redirects_are_never_followed(sim: Sim, router: Router) -> None:
    elsewhere = sim("trinity")
    server = sim("trinity", faults=f"status=307,location={elsewhere.base_url}/chat/completions")
    r = router(config_yaml(provider_yaml("trinity", server, ["gpt-4o"]), routing=FAST))
    response = chat(r, {"model": "gpt-4o", "messages": HELLO})
    assert response.status_code == 502
    assert elsewhere.chat_requests == 0  # upstream URLs come only from config


def test_our_own_errors(three: Any) -> None:
    r, _ = three
    assert chat(r, {"model": "nope", "messages": HELLO}).json()["error"]["code"] == "model_not_found"
    assert chat(r, {"model": "nope", "messages": HELLO}).status_code == 404
    assert chat(r, {"model": "gpt-4o"}).status_code == 400
    bad_key = httpx.post(
        r.url + "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": HELLO},
        headers={"Authorization": "Bearer wrong"},
    )
    assert bad_key.status_code == 401 and bad_key.json()["error"]["code"] == "invalid_api_key"
    not_json = httpx.post(r.url + "/v1/chat/completions", content=b"{nope", headers=AUTH)
    assert not_json.status_code == 400 and "parse the JSON" in not_json.json()["error"]["message"]
    assert httpx.post(r.url + "/v1/chat/completions", content=b"[]", headers=AUTH).status_code == 400
    unknown = httpx.get(r.url + "/v2/things")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert unknown.headers["x-request-id"].startswith("req_")
    wrong_method = httpx.get(r.url + "/v1/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "invalid_request_error"


def test_allow_list_before_existence(sim: Sim, router: Router) -> None:
    server = sim("real200")
    text = provider_yaml("real200", server, ["gpt-4o", "claude-sonnet-4"])
    r = router(f"clients:\n  - {{name: narrow, key: {CLIENT_KEY}, models: ['gpt-*']}}\nproviders:\n{text}")
    denied = chat(r, {"model": "claude-sonnet-4", "messages": HELLO})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert chat(r, {"model": "gpt-unknown", "messages": HELLO}).status_code == 404  # allowed, but unserved
    assert chat(r, {"model": "other-unknown", "messages": HELLO}).status_code == 403  # outside the globs
    models = httpx.get(r.url + "/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["gpt-4o"]
    assert httpx.get(r.url + "/models").status_code == 401


def test_body_limit(sim: Sim, router: Router) -> None:
    server = sim("real200")
    r = router(config_yaml(provider_yaml("real200", server, ["gpt-4o"]), server="{max_body_bytes: 2048}"))
    big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 5000}]}
    declared = chat(r, big)
    assert declared.status_code == 413 and declared.json()["error"]["code"] == "request_too_large"

    def chunked() -> Any:
        yield orjson.dumps(big)[:1500]
        yield orjson.dumps(big)[1500:]

    streamed = httpx.post(r.url + "/v1/chat/completions", content=chunked(), headers=AUTH)
    assert streamed.status_code == 413
    assert server.chat_requests == 0
    assert chat(r, {"model": "gpt-4o", "messages": HELLO}).status_code == 200


def test_a_declared_oversized_body_is_refused_without_reading_it(sim: Sim, router: Router) -> None:
    server = sim("real200")
    r = router(config_yaml(provider_yaml("real200", server, ["gpt-4o"]), server="{max_body_bytes: 2048}"))
    with socket.create_connection(("127.0.0.1", r.port), timeout=5) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n{"
        )  # a 100 MB promise, one byte sent
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


def test_unexpected_errors_are_500_with_the_request_id_and_no_traceback(sim: Sim, router: Router) -> None:
    class Broken:
        async def request(self, method: bytes, target: bytes, headers: object, body: bytes) -> Any:
            raise ZeroDivisionError("a bug")

        async def aclose(self) -> None:
            pass

    server = sim("real200")
    config_text = config_yaml(provider_yaml("real200", server, ["gpt-4o"]))
    from router import config as configuration

    config = configuration.parse(config_text, env={})
    r = router(config, upstream=Upstream(config.providers, client_factory=lambda _: Broken()))
    response = chat(r, {"model": "gpt-4o", "messages": HELLO}, headers={"X-Request-Id": "find-me"})
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert "find-me" in response.json()["error"]["message"]
    assert "Traceback" not in response.text and "ZeroDivision" not in response.text


def test_health_endpoints(three: Any) -> None:
    r, _ = three
    assert httpx.get(r.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(r.url + "/readyz").json() == {"status": "ready"}


def test_total_deadline_bounds_a_slow_stream(sim: Sim, router: Router) -> None:
    server = sim("trinity", chunks=40, chunk_gap=0.1)
    r = router(
        config_yaml(
            provider_yaml("trinity", server, ["gpt-4o"]),
            routing="{timeouts: {connect: 1s, first_token: 1s, idle: 1s, total: 1500ms}}",
        )
    )
    started = time.monotonic()
    chunks = data_events(chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True}).text)
    assert 1.2 < time.monotonic() - started < 3
    assert chunks[-1]["error"]["code"] == "upstream_timeout"
    assert "deadline" in chunks[-1]["error"]["message"]
