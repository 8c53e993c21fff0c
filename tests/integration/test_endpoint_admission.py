"""What every endpoint checks before anything goes upstream: the client key (Anthropic's
x-api-key too), the model's kind, features no provider of the model takes — named as the
client's own API names them — and count_tokens' model checks."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture
def served(
    sim: Callable[..., SimServer], router: Callable[..., RouterThread]
) -> tuple[RouterThread, SimServer]:
    real200 = sim("real200")
    chenyu = sim("chenyu")
    config = config_yaml(
        provider_yaml(
            "real200",
            real200,
            {
                "gpt-4o": "{}",
                "text-embedding-3-small": "{kind: embedding}",
                "bge-reranker-v2-m3": "{kind: rerank}",
            },
        ),
        # chenyu's document lists no response_format, no tools
        provider_yaml("chenyu", chenyu, {"doubao-seed-2-0-lite": "{upstream: doubao-seed-2-0-lite-260428}"},
                      accepts="[]"),
    )  # fmt: skip
    return router(config), chenyu


def post(router: RouterThread, path: str, body: dict[str, object], **headers: str) -> httpx.Response:
    return httpx.post(router.url + path, json=body, headers=headers or AUTH, timeout=10)


@pytest.mark.parametrize(
    ("path", "body", "kind"),
    [
        (
            "/v1/chat/completions",
            {"model": "text-embedding-3-small", "messages": HELLO},
            "an embedding model",
        ),
        ("/v1/responses", {"model": "bge-reranker-v2-m3", "input": "hi"}, "a rerank model"),
        ("/v1/embeddings", {"model": "gpt-4o", "input": "hi"}, "a chat model"),
        ("/v1/rerank", {"model": "text-embedding-3-small", "query": "q", "documents": ["d"]}, "an embedding"),
    ],
)
def test_a_model_of_another_kind_is_a_400_naming_model(
    served: tuple[RouterThread, SimServer], path: str, body: dict[str, object], kind: str
) -> None:
    router, _ = served
    answer = post(router, path, body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "model" and kind in error["message"]


def test_a_kind_mismatch_on_messages_reads_as_anthropic_error(served: tuple[RouterThread, SimServer]) -> None:
    router, _ = served
    answer = post(
        router, "/v1/messages", {"model": "text-embedding-3-small", "max_tokens": 5, "messages": HELLO},
        **{"x-api-key": CLIENT_KEY},
    )  # fmt: skip
    assert answer.status_code == 400
    body = answer.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "an embedding model" in body["error"]["message"]


def test_features_no_provider_takes_are_named_as_the_client_sent_them(
    served: tuple[RouterThread, SimServer],
) -> None:
    router, chenyu = served
    schema = {"type": "json_schema", "name": "x", "schema": {"type": "object"}}
    answer = post(
        router, "/v1/responses", {"model": "doubao-seed-2-0-lite", "input": "hi", "text": {"format": schema}}
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "text.format" and "'text.format'" in error["message"]
    answer = post(
        router, "/v1/messages",
        {"model": "doubao-seed-2-0-lite", "max_tokens": 5, "messages": HELLO, "top_k": 5},
        **{"x-api-key": CLIENT_KEY},
    )  # fmt: skip
    assert answer.status_code == 400
    assert "top_k" in answer.json()["error"]["message"]
    assert httpx.get(f"{chenyu.base_url.removesuffix('/v1')}/_sim/stats").json()["requests"] == 0


def test_the_anthropic_key_header_and_bearer_both_authenticate(
    served: tuple[RouterThread, SimServer],
) -> None:
    router, _ = served
    body = {"model": "gpt-4o", "max_tokens": 20, "messages": HELLO}
    assert post(router, "/v1/messages", body, **{"x-api-key": CLIENT_KEY}).status_code == 200
    assert post(router, "/v1/messages", body, Authorization=f"Bearer {CLIENT_KEY}").status_code == 200
    refused = post(router, "/v1/messages", body, **{"x-api-key": "sk-wrong"})
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    # The Anthropic SDKs read the request id from `request-id`: it is X-Request-Id's, errors too.
    assert refused.headers["request-id"] == refused.headers["x-request-id"]
    answered = post(router, "/v1/messages", body, **{"x-api-key": CLIENT_KEY, "X-Request-Id": "req-mine"})
    assert answered.headers["request-id"] == "req-mine" == answered.headers["x-request-id"]
    # x-api-key is the Messages API's; elsewhere only Authorization counts.
    chat = post(
        router, "/v1/chat/completions", {"model": "gpt-4o", "messages": HELLO}, **{"x-api-key": CLIENT_KEY}
    )
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"


def test_count_tokens_checks_the_model_and_answers_an_estimate(
    served: tuple[RouterThread, SimServer],
) -> None:
    router, _ = served
    key = {"x-api-key": CLIENT_KEY}
    counted = post(router, "/v1/messages/count_tokens", {"model": "gpt-4o", "messages": HELLO}, **key)
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0
    longer = post(router, "/v1/messages/count_tokens", {"model": "gpt-4o", "messages": HELLO * 20}, **key)
    assert longer.json()["input_tokens"] > counted.json()["input_tokens"]
    unknown = post(router, "/v1/messages/count_tokens", {"model": "nope", "messages": HELLO}, **key)
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    missing = post(router, "/v1/messages/count_tokens", {"messages": HELLO}, **key)
    assert missing.status_code == 400 and missing.json()["type"] == "error"
    unknown_key = {"x-api-key": "sk-wrong"}
    refused = post(router, "/v1/messages/count_tokens", {"model": "gpt-4o", "messages": HELLO}, **unknown_key)
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"


def test_other_methods_on_the_new_paths_are_405(served: tuple[RouterThread, SimServer]) -> None:
    router, _ = served
    for path in ("/v1/embeddings", "/v1/rerank", "/v1/responses", "/v1/messages", "/embeddings"):
        assert httpx.get(router.url + path, headers=AUTH).status_code == 405
    anthropic = httpx.get(router.url + "/v1/messages", headers=AUTH).json()
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "invalid_request_error"
    assert (
        httpx.get(router.url + "/v1/responses", headers=AUTH).json()["error"]["code"] == "method_not_allowed"
    )


def test_the_anthropic_key_header_never_goes_upstream_on_messages(
    sim: Callable[..., SimServer], router: Callable[..., RouterThread]
) -> None:
    # A provider that takes a client's X-Api-Key (forward_headers) still never gets it from
    # /v1/messages, where it is the router client key; from chat it is forwarded as before.
    s = sim("real200")
    r = router(config_yaml(provider_yaml("real200", s, ["gpt-4o"], forward_headers="[X-Api-Key]")))
    body = {"model": "gpt-4o", "max_tokens": 20, "messages": HELLO}
    assert post(r, "/v1/messages", body, **{"x-api-key": CLIENT_KEY}).status_code == 200
    assert "x-api-key" not in s.requests[-1].headers
    chat = {"model": "gpt-4o", "messages": HELLO}
    assert post(r, "/v1/chat/completions", chat, **AUTH, **{"X-Api-Key": "sk-theirs"}).status_code == 200
    assert s.requests[-1].headers["x-api-key"] == "sk-theirs"
