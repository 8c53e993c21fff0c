"""Limits, budgets, idempotent replay and settlement on every API endpoint, through a running router.

The endpoints share one path through router (api/endpoint.py): what these tests pin is that each
of them takes it — refused in its own API's error shape, replayed byte for byte, and settled
once per provider call under its own name. Rig: test_endpoints_failover.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from anthropic.types import ErrorResponse

from tests.conftest import RouterThread
from tests.integration.test_endpoints_failover import (
    CHAT,
    CHAT_STREAM,
    EVERY_WAY,
    MESSAGES,
    MESSAGES_STREAM,
    NEW,
    RESPONSES,
    RESPONSES_STREAM,
    Case,
    Router,
    Sim,
    assert_answer,
    ids,
    pair,
    post,
    records,
    served,
)
from tests.redis_rig import RedisServer

ADMIN = {"Authorization": "Bearer admin-secret"}


def usage(r: RouterThread) -> dict[str, Any]:
    """The client's row of /admin/usage."""
    report = httpx.get(r.url + "/admin/usage", headers=ADMIN, timeout=5)
    assert report.status_code == 200, report.text
    return report.json()["clients"]["team"]  # type: ignore[no-any-return]


def assert_error(
    case: Case, response: httpx.Response, status: int, openai_code: str, anthropic_type: str
) -> None:
    """A refusal in the case's API shape: Anthropic's on /v1/messages, OpenAI's elsewhere."""
    assert response.status_code == status, response.text
    body = response.json()
    if case.endpoint == "messages":
        ErrorResponse.model_validate(body)
        assert body["type"] == "error" and body["error"]["type"] == anthropic_type
        assert body["error"]["message"]
    else:
        assert body["error"]["code"] == openai_code and body["error"]["message"]


# -- limits and budgets: refused before anything goes upstream ----------------------------------


@pytest.mark.parametrize("case", NEW, ids=ids(NEW))
def test_a_client_over_its_rate_limit_is_refused_in_its_apis_shape(
    sim: Sim, router: Router, case: Case
) -> None:
    r, a, b = pair(sim, router, client="limits: {rpm: 1}")
    assert_answer(case, post(r, case))
    refused = post(r, case)
    assert_error(case, refused, 429, "rate_limit_exceeded", "rate_limit_error")
    assert int(refused.headers["retry-after"]) >= 1
    assert served(a, b) == [1, 0]


@pytest.mark.parametrize("case", NEW, ids=ids(NEW))  # admitted before anything streams: whole is enough
def test_a_request_beyond_the_budget_is_refused_and_never_sent(sim: Sim, router: Router, case: Case) -> None:
    r, a, b = pair(sim, router, client="budget: {tokens: 5, per: month}")
    refused = post(r, case)
    assert_error(case, refused, 402, "insufficient_quota", "billing_error")
    assert "budget of 'team'" in refused.json()["error"]["message"]
    assert "x-settlement-key" not in refused.headers
    assert served(a, b) == [0, 0] and usage(r)["total"]["tokens"] == 0


# -- idempotent replay -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", EVERY_WAY, ids=ids(EVERY_WAY))
def test_an_idempotent_repeat_is_replayed_byte_for_byte(
    sim: Sim, router: Router, tmp_path: Path, case: Case
) -> None:
    r, a, b = pair(sim, router, ledger_file=tmp_path / "l.jsonl")
    key = {"X-Idempotency-Key": f"order-{case.id}"}
    first = post(r, case, key)
    again = post(r, case, key)
    assert_answer(case, first)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["x-settlement-key"] == first.headers["x-settlement-key"]
    assert served(a, b) == [1, 0]
    (record,) = records(r)
    assert record["endpoint"] == case.endpoint


def test_an_idempotency_key_is_not_replayed_across_endpoints(sim: Sim, router: Router) -> None:
    """A Messages body is also a valid Chat Completions body. Sent to both with one key, the
    second endpoint must not get the first one's stored answer: a chat completion replayed on
    /v1/messages is not a message the client's SDK can parse."""
    r, a, b = pair(sim, router)
    key = {"X-Idempotency-Key": "shared"}
    as_chat = Case(CHAT.endpoint, CHAT.path, MESSAGES.body)
    first = post(r, as_chat, key)
    assert_answer(as_chat, first)
    again = post(r, MESSAGES, key)
    assert again.content != first.content and "idempotent-replayed" not in again.headers
    if again.status_code == 200:  # run as its own request ...
        assert_answer(MESSAGES, again)
        assert served(a, b) == [2, 0]
    else:  # ... or refused as a reuse of the key, in Anthropic's shape
        assert_error(MESSAGES, again, 422, "", "invalid_request_error")
        assert served(a, b) == [1, 0]


# -- settlement: one record per provider call, under its endpoint's name ------------------------

MIX = [
    CHAT,
    CHAT_STREAM,
    *NEW,
    RESPONSES_STREAM,
    MESSAGES_STREAM,
    RESPONSES,
    MESSAGES_STREAM,
]
CUT = 6
"""The request of MIX (a Responses stream) that provider a cuts mid-answer: settled too, as an error."""


@pytest.mark.parametrize("state", ["memory", "redis"])
def test_every_provider_call_is_settled_once_under_its_endpoint(
    sim: Sim, router: Router, tmp_path: Path, request: pytest.FixtureRequest, state: str
) -> None:
    if state == "memory":
        where: dict[str, Any] = {"ledger_file": tmp_path / "l.jsonl"}
    else:
        redis: RedisServer = request.getfixturevalue("fresh_redis")
        where = {"state_url": redis.url}
    r, a, b = pair(sim, router, a={"faults": f"cut=2,after={CUT},times=1", "chunk_gap": 0.02}, **where)
    responses = [post(r, case) for case in MIX]
    for i, (case, response) in enumerate(zip(MIX, responses, strict=True)):
        if i != CUT:
            assert_answer(case, response)
    assert "response.failed" in responses[CUT].text

    found = records(r)
    assert [x["settlement_key"] for x in found] == [x.headers["x-settlement-key"] for x in responses]
    assert len(found) == sum(served(a, b)) == len(MIX)
    for i, (record, case) in enumerate(zip(found, MIX, strict=True)):
        assert record["endpoint"] == case.endpoint
        assert record["outcome"] == ("error" if i == CUT else "completed")
        assert record["prompt_tokens"] > 0
        assert (record["completion_tokens"] > 0) == (case.endpoint not in ("embeddings", "rerank"))
    # The client's counters, by endpoint, are the sums of its records (SPEC §6's invariant).
    by_endpoint = usage(r)["by_endpoint"]
    assert set(by_endpoint) == {c.endpoint for c in MIX}
    for endpoint, row in by_endpoint.items():
        mine = [x for x in found if x["endpoint"] == endpoint]
        assert row["total"]["tokens"] == sum(x["prompt_tokens"] + x["completion_tokens"] for x in mine)
