"""A provider that quotes our key back: its text reaches the client, the stored replay and the
logs only with router's credentials replaced by `[redacted]` (classify.read_answer)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping

import httpx
import orjson
import pytest

from router import logs
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
FAST = "{max_attempts: 2, timeouts: {connect: 1s, first_token: 2s, idle: 1s, total: 5s}}"
KEY = "sk-live-PROVIDERKEY-0123456789"
OTHER_KEY = "abc12"
"""A second, short key of the same provider: redacted too, but only as a whole token."""
FORWARDED = "client-forwarded-credential-42"


def provider(server: SimServer, **options: str) -> str:
    lines = [
        "  p:",
        f"    base_url: {server.base_url}",
        f"    keys: [{KEY}, {{name: second, key: {OTHER_KEY}}}]",
        f"    dialect: {server.dialect.name}",
        *(f"    {name}: {value}" for name, value in options.items()),
        "    models: {gpt-4o: {}}",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every line router's loggers write during the test, formatted as they would be."""
    monkeypatch.setattr(logs, "_access_fd", None)  # access lines through logging, to be captured
    lines: list[str] = []
    with caplog.at_level(logging.INFO, logger="router"):
        yield lines
        formatter = logs.JsonFormatter()
        lines += [formatter.format(r) for r in caplog.records if r.name.startswith("router")]


def wait_for_access_lines(caplog: pytest.LogCaptureFixture, count: int) -> None:
    """The access line is written once the answer went out: wait for it (bounded)."""
    deadline = time.monotonic() + 5
    while sum(r.name == "router.access" for r in caplog.records) < count:
        assert time.monotonic() < deadline, "no access line"
        time.sleep(0.01)


def chat(
    r: RouterThread, body: Mapping[str, object], headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.post(
        r.url + "/v1/chat/completions", json=body, headers={**AUTH, **(headers or {})}, timeout=10
    )


def assert_scrubbed(text: str) -> None:
    assert KEY not in text
    assert f"Bearer {OTHER_KEY}" not in text
    assert FORWARDED not in text


def test_a_400_quoting_our_key_reaches_neither_the_client_nor_the_replay_nor_the_logs(
    sim: Sim, router: Router, caplog: pytest.LogCaptureFixture, records: list[str]
) -> None:
    s = sim("trinity", faults="status=400,echo_auth,code=invalid_request_error,message=bad")
    r = router(config_yaml(provider(s), routing="{strategy: ordered}"))
    body = {"model": "gpt-4o", "messages": HELLO}
    first = chat(r, body, {"X-Idempotency-Key": "redaction-1"})
    again = chat(r, body, {"X-Idempotency-Key": "redaction-1"})

    assert first.status_code == again.status_code == 400
    message = first.json()["error"]["message"]
    assert message == "bad (you sent Authorization: Bearer [redacted])"  # the provider's words, kept
    assert again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # the stored answer is the scrubbed one
    assert s.chat_requests == 1
    wait_for_access_lines(caplog, 2)
    for text in (first.text, again.text, *records):
        assert_scrubbed(text)


def test_a_500_quoting_our_key_is_a_502_without_it(
    sim: Sim, router: Router, caplog: pytest.LogCaptureFixture, records: list[str]
) -> None:
    s = sim("trinity", faults="status=500,echo_auth")
    r = router(config_yaml(provider(s), routing=FAST))
    answer = chat(r, {"model": "gpt-4o", "messages": HELLO})
    assert answer.status_code == 502
    assert "(you sent Authorization: Bearer [redacted])" in answer.json()["error"]["message"]
    assert s.chat_requests == 2  # both keys tried: each quoted, each scrubbed
    wait_for_access_lines(caplog, 1)
    for text in (answer.text, *records):
        assert_scrubbed(text)


def test_an_error_answered_with_200_is_scrubbed_too(sim: Sim, router: Router) -> None:
    s = sim("trinity", faults="status=200,echo_auth,message=failed")
    r = router(config_yaml(provider(s), routing=FAST))
    answer = chat(r, {"model": "gpt-4o", "messages": HELLO})
    assert answer.status_code == 502
    assert answer.json()["error"]["message"].endswith("failed (you sent Authorization: Bearer [redacted])")
    assert_scrubbed(answer.text)


def test_a_stream_error_event_after_the_commit_point_is_scrubbed(
    sim: Sim, router: Router, caplog: pytest.LogCaptureFixture, records: list[str]
) -> None:
    s = sim("trinity", faults="stream_error=2,echo_auth,message=died", chunks=4)
    r = router(config_yaml(provider(s), routing=FAST))
    answer = chat(r, {"model": "gpt-4o", "messages": HELLO, "stream": True}, {"X-Idempotency-Key": "s-1"})
    assert answer.status_code == 200
    events = [orjson.loads(b[6:]) for b in answer.text.split("\n\n") if b.startswith("data: {")]
    assert events[0]["choices"]  # the answer had started: the error comes as an event
    error = events[-1]["error"]
    assert error["message"] == "p: died (you sent Authorization: Bearer [redacted])"
    assert "data: [DONE]" not in answer.text
    wait_for_access_lines(caplog, 1)
    for text in (answer.text, *records):
        assert_scrubbed(text)


def test_a_forwarded_credential_the_provider_quotes_is_scrubbed(sim: Sim, router: Router) -> None:
    s = sim("trinity", faults="status=400,echo_auth,message=bad")
    r = router(config_yaml(provider(s, forward_headers="[X-Api-Key]"), routing=FAST))
    answer = chat(r, {"model": "gpt-4o", "messages": HELLO}, {"X-Api-Key": FORWARDED})
    assert s.requests[-1].headers["x-api-key"] == FORWARDED  # it was forwarded, and quoted back
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "bad (you sent Authorization: Bearer [redacted]; X-Api-Key: [redacted])"
    )
    assert_scrubbed(answer.text)
