"""Strict budgets (issue 15): a request that needs more than is left of its client's budget
is refused before anything goes upstream (`on_exceed: refuse`, the default), or sent with its
completion lowered to fit (`on_exceed: cap`). On memory, Redis and Redis Cluster, through a
running router and the provider simulators, which honour max_tokens / max_completion_tokens.

What is left to overshoot is one request's estimation error: the prompt is reserved at ~bytes/3
(more than providers count), the completion at max_tokens (which providers honour).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from router.sim.tokens import FILLER
from tests.conftest import provider_yaml
from tests.integration import test_settlement as settlement
from tests.integration.test_settlement import (
    AUTH,
    HELLO,
    Backend,
    Router,
    RouterThread,
    Sim,
    config,
    records,
    usage,
)

backend = settlement.backend  # fixtures: memory, Redis and Redis Cluster; the counters-equal-ledger check
settled = settlement.settled

LONG = 400
"""Words in every simulated answer: more than any completion allowance here, so an answer
uses all it is allowed and the budget is measured at its worst."""


def post(r: RouterThread, messages: list[dict[str, Any]] = HELLO, **body: Any) -> httpx.Response:
    return httpx.post(
        r.url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "gpt-4o", "messages": messages, **body},
        timeout=30,
    )


def estimate(**body: Any) -> int:
    """What router reserves for the prompt of post(r, **body): its JSON's bytes / 3."""
    sent = httpx.Request("POST", "http://x", json={"model": "gpt-4o", "messages": HELLO, **body})
    return -(-len(sent.content) // 3)


def words(n: int) -> str:
    return " ".join(FILLER[i % len(FILLER)] for i in range(n))


def used(r: RouterThread) -> int:
    return int(usage(r)["clients"]["team"]["month"]["tokens"])


def spend_24(r: RouterThread) -> None:
    """The issue's starting point: 24 tokens of the budget used (5 prompt + 19 completion)."""
    first = post(r, max_tokens=19)
    assert first.status_code == 200 and first.json()["usage"]["total_tokens"] == 24
    assert used(r) == 24


@pytest.mark.parametrize("on_exceed", ["refuse", "cap"])
def test_a_5000_word_prompt_against_96_tokens_left_is_402_and_never_sent(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread], on_exceed: str
) -> None:
    server = sim("trinity", chunks=LONG)
    budget = f"budget: {{tokens: 120, per: month, on_exceed: {on_exceed}}}"
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client=budget))
    settled.append(r)
    spend_24(r)
    big = post(r, [{"role": "user", "content": words(5000)}])
    assert big.status_code == 402, big.text
    error = big.json()["error"]
    assert error["code"] == "insufficient_quota" and error["type"] == "insufficient_quota"
    assert "more than the 96 tokens left of the budget of 'team' this month" in error["message"]
    # refuse: the whole reservation (prompt + 4096); cap: the prompt and one token is too much.
    assert ("at least" in error["message"]) == (on_exceed == "cap")
    assert server.chat_requests == 1 and used(r) == 24  # nothing went upstream, nothing was spent


@pytest.mark.parametrize("stream", [False, True])
def test_cap_sends_the_request_with_its_completion_lowered_to_what_is_left(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread], stream: bool
) -> None:
    server = sim("trinity", chunks=LONG)
    budget = "budget: {tokens: 120, per: month, on_exceed: cap}"
    r = router(config(backend, provider_yaml("trinity", server, ["gpt-4o"]), client=budget))
    settled.append(r)
    spend_24(r)
    # No max_tokens: its prompt (estimated: 22, or 33 with the stream options) + 4096 reserved,
    # 96 left: the rest of the 96 for the completion.
    options: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    fits = 96 - estimate(**options)
    capped = post(r, **options)
    assert capped.status_code == 200 and capped.headers["x-router-budget-capped"] == str(fits)
    sent = server.requests[-1].body
    assert sent["max_completion_tokens"] == fits and "max_tokens" not in sent
    assert records(r)[1]["completion_tokens"] == fits  # the simulator's answer is longer: cut there
    assert used(r) == 24 + 5 + fits
    # What is left (the prompt's estimate minus what it used) is less than the same request's
    # prompt, estimated: 402 now, not another cap.
    assert 120 - used(r) < estimate(**options)
    assert post(r, **options).status_code == 402


def test_cap_lowers_the_field_the_client_used_and_each_provider_renames_it(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread]
) -> None:
    server = sim("chenyu", chunks=LONG)
    route = "{upstream: doubao-seed-2-0-lite-260428, params: {rename: {max_completion_tokens: max_tokens}}}"
    budget = "budget: {tokens: 100, per: month, on_exceed: cap}"
    # chenyu's whole answers report its usage, its streams none: read whole (streaming: false)
    # so the arithmetic below is the provider's own count, not router's estimate.
    chenyu = provider_yaml("chenyu", server, {"gpt-4o": route}, streaming="false")
    r = router(config(backend, chenyu, client=budget))
    settled.append(r)
    capped = post(r, max_tokens=500)  # 28 + 500 reserved of 100: 72 fit
    assert capped.status_code == 200 and capped.headers["x-router-budget-capped"] == "72"
    assert capped.json()["usage"]["completion_tokens"] == 72
    assert server.requests[-1].body["max_tokens"] == 72
    # No max_tokens (22 prompt, estimated): max_completion_tokens, renamed for chenyu; 23 left,
    # so one token, the least a request is sent with.
    renamed = post(r)
    assert renamed.status_code == 200 and renamed.headers["x-router-budget-capped"] == "1"
    assert server.requests[-1].body["max_tokens"] == 1
    assert "max_completion_tokens" not in server.requests[-1].body
    assert used(r) == 77 + 5 + 1


@pytest.mark.parametrize("kind", ["tokens", "cost"])
@pytest.mark.parametrize("on_exceed", ["refuse", "cap"])
def test_a_series_against_a_small_budget_ends_within_it(
    backend: Backend, sim: Sim, router: Router, settled: list[RouterThread], kind: str, on_exceed: str
) -> None:
    """Requests one after another until refused; the overshoot is how far the ledger's total
    ends past the budget (printed: run with -s to see the figures)."""
    server = sim("trinity", chunks=LONG)
    price = "{price: {input: 1000, output: 1000}}"  # 0.001 a token: a cost of 0.3 is 300 tokens
    limit = "tokens: 300" if kind == "tokens" else "cost: 0.3"
    budget = f"budget: {{{limit}, per: month, on_exceed: {on_exceed}}}"
    r = router(config(backend, provider_yaml("trinity", server, {"gpt-4o": price}), client=budget))
    settled.append(r)
    statuses = []
    for _ in range(40):
        answer = post(r, max_tokens=60)  # reserves ~28 + 60, uses 5 + 60 unless capped
        statuses.append(answer.status_code)
        if answer.status_code != 200:
            break
    assert statuses[-1] == 402 and set(statuses[:-1]) == {200}
    row = usage(r)["clients"]["team"]["month"]
    total = sum(x["prompt_tokens"] + x["completion_tokens"] for x in records(r))
    spent = row["tokens"] if kind == "tokens" else round(row["cost"] * 1000)
    assert spent == total
    print(
        f"\n[overshoot] {backend.name} {kind} {on_exceed}: {len(statuses) - 1} answers, "
        f"used {spent}/300, overshoot {max(0, spent - 300)}"
    )
    assert spent <= 300
    if on_exceed == "cap":  # the last answer was lowered to what was left: little is left unused
        assert spent > 300 - 28
