"""Request headers router reads or forwards come once (a repeat is a 400 naming it), and
GET /metrics behind `metrics.key`."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from router import config as configuration
from router.config import Config
from router.middleware import OnceHeaders
from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = ("Authorization", f"Bearer {CLIENT_KEY}")
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture
def proxied(sim: Sim, router: Router) -> tuple[RouterThread, SimServer]:
    s = sim("trinity")
    return router(config_yaml(provider_yaml("trinity", s, ["gpt-4o"], forward_headers="[X-Trace-Tag]"))), s


def post(
    r: RouterThread, headers: list[tuple[str, str]], path: str = "/v1/chat/completions"
) -> httpx.Response:
    return httpx.post(r.url + path, json=BODY, headers=headers, timeout=10)


def test_two_authorization_headers_are_a_400_naming_it(proxied: tuple[RouterThread, SimServer]) -> None:
    r, s = proxied
    answer = post(r, [AUTH, AUTH])
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {
            "message": "The authorization header was sent more than once; send it once.",
            "type": "invalid_request_error",
            "param": "authorization",
            "code": "invalid_request_error",
        }
    }
    assert answer.headers["x-request-id"].startswith("req_")
    assert s.chat_requests == 0
    # the rule is the envelope's: every route, not only the proxy
    models = httpx.get(r.url + "/v1/models", headers=[AUTH, AUTH], timeout=10)
    assert models.status_code == 400
    assert models.json()["error"]["param"] == "authorization"


@pytest.mark.parametrize(
    "name", ["X-Request-Id", "X-Idempotency-Key", "Idempotency-Key", "X-Conversation-Id", "X-Trace-Tag"]
)
def test_a_repeated_header_router_reads_or_forwards_is_a_400_naming_it(
    proxied: tuple[RouterThread, SimServer], name: str
) -> None:
    r, s = proxied
    answer = post(r, [AUTH, (name, "first-value"), (name, "second-value")])
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (name.lower(), "invalid_request_error")
    assert name.lower() in error["message"]
    assert "first-value" not in answer.headers["x-request-id"]  # neither copy is echoed
    assert s.chat_requests == 0


def test_one_of_each_still_works_and_other_repeats_are_not_router_business(
    proxied: tuple[RouterThread, SimServer],
) -> None:
    r, s = proxied
    headers = [
        AUTH,
        ("X-Request-Id", "trace-1"),
        ("X-Idempotency-Key", "once-1"),
        ("X-Conversation-Id", "conv-1"),
        ("X-Trace-Tag", "tag-1"),
        ("X-Unrelated", "a"),
        ("X-Unrelated", "b"),  # neither read nor forwarded: repeats are fine
    ]
    answer = post(r, headers)
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "trace-1"
    sent = s.requests[-1].headers
    assert (sent["x-request-id"], sent["x-conversation-id"], sent["x-trace-tag"]) == (
        "trace-1",
        "conv-1",
        "tag-1",
    )
    assert "x-unrelated" not in sent
    assert post(r, [AUTH, ("Idempotency-Key", "once-2")]).status_code == 200


def test_the_rule_follows_the_forward_headers_of_a_reloaded_config() -> None:
    def config(forwarded: str) -> Config:
        text = config_yaml(
            "  p:\n    base_url: http://127.0.0.1:1\n    keys: [k]\n"
            f"    forward_headers: [{forwarded}]\n    models: {{m: {{}}}}\n"
        )
        return configuration.parse(text, env={})

    once = OnceHeaders(config("X-Trace-Tag"))
    assert b"x-trace-tag" in once.bits and b"x-other" not in once.bits
    once.use(config("X-Other"))
    assert b"x-other" in once.bits and b"x-trace-tag" not in once.bits
    assert {b"authorization", b"x-request-id", b"x-idempotency-key", b"idempotency-key"} <= once.bits.keys()
    assert len(set(once.bits.values())) == len(once.bits)  # a bit each


# -- metrics.key ------------------------------------------------------------------------------


def metrics_router(sim: Sim, router: Router, key: str | None) -> RouterThread:
    s = sim("trinity")
    text = config_yaml(provider_yaml("trinity", s, ["gpt-4o"]))
    if key is not None:
        text = 'metrics: {key: "${METRICS_KEY}"}\n' + text
    return router(configuration.parse(text, env={"METRICS_KEY": key or ""}))


def test_metrics_key_guards_the_metrics(sim: Sim, router: Router) -> None:
    r = metrics_router(sim, router, "metrics-secret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic metrics-secret"}):
        refused = httpx.get(r.url + "/metrics", headers=headers, timeout=10)
        assert refused.status_code == 401
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
        assert "router_" not in refused.text
    allowed = httpx.get(r.url + "/metrics", headers={"Authorization": "Bearer metrics-secret"}, timeout=10)
    assert allowed.status_code == 200
    assert "router_requests_total" in allowed.text or "# HELP router_" in allowed.text


def test_without_metrics_key_the_metrics_are_open(sim: Sim, router: Router) -> None:
    r = metrics_router(sim, router, None)
    assert httpx.get(r.url + "/metrics", timeout=10).status_code == 200
