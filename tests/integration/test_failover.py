"""Failover scenarios over real sockets: what the client got, what each provider saw, how long.

Two simulated providers serve gpt-4o: `a` (trinity's dialect) and `b` (real200's). Each
test injects a fault and states the expected client answer, the attempts each provider
saw and the time it took. With ROUTER_SCENARIO_LOG set, the figures are appended there.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from router.sim import SimServer
from tests.conftest import CLIENT_KEY, RouterThread, config_yaml, provider_yaml

Sim = Callable[..., SimServer]
Router = Callable[..., RouterThread]
AUTH = {"Authorization": f"Bearer {CLIENT_KEY}"}
HELLO = [{"role": "user", "content": "Hello there"}]
ROUTING = (
    "{strategy: ordered, max_attempts: 3, breaker: {failures: 3, cooldown: 1s, max_cooldown: 2s},"
    " timeouts: {connect: 1s, first_token: 500ms, idle: 500ms, response: 2s, total: 6s}}"
)


@pytest.fixture
def scenario(request: pytest.FixtureRequest) -> Iterator[Callable[..., None]]:
    """record(attempts=..., seconds=..., **more): the figures of this scenario, for the closing note."""
    rows: list[dict[str, Any]] = []
    yield lambda **figures: rows.append(figures)
    path = os.environ.get("ROUTER_SCENARIO_LOG")
    if path and rows:
        with open(path, "a") as out:
            for row in rows:
                out.write(json.dumps({"scenario": request.node.name, **row}) + "\n")


def pair(
    sim: Sim,
    router: Router,
    *,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
    routing: str = ROUTING,
    a_opts: dict[str, str] | None = None,
    b_opts: dict[str, str] | None = None,
) -> tuple[RouterThread, SimServer, SimServer]:
    sa, sb = sim("trinity", chunks=4, **(a or {})), sim("real200", chunks=4, **(b or {}))
    r = router(
        config_yaml(
            provider_yaml("a", sa, {"gpt-4o": "{params: {drop: [thinking_enabled]}}"}, **(a_opts or {})),
            provider_yaml("b", sb, ["gpt-4o"], **(b_opts or {})),
            routing=routing,
        )
    )
    return r, sa, sb


def one(sim: Sim, router: Router, **options: Any) -> tuple[RouterThread, SimServer]:
    sa = sim("trinity", chunks=4, **options)
    return router(config_yaml(provider_yaml("a", sa, ["gpt-4o"]), routing=ROUTING)), sa


def chat(r: RouterThread, **body: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.post(
        r.url + "/v1/chat/completions",
        headers=AUTH,
        timeout=15,
        json={"model": "gpt-4o", "messages": HELLO, **body},
    )
    return response, time.monotonic() - started


def events(text: str) -> list[Any]:
    return [
        b[6:] if b[6:] == "[DONE]" else json.loads(b[6:])
        for b in text.split("\n\n")
        if b.startswith("data: ")
    ]


def gaps(server: SimServer) -> list[float]:
    times = [r.at for r in server.requests]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


# -- rate limits ------------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_out_when_nowhere_else_can_answer(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a = one(sim, router, faults="status=429,retry_after=1,times=1")
    response, seconds = chat(r)
    assert response.status_code == 200
    assert response.headers["x-router-attempts"] == "2" and a.chat_requests == 2
    assert gaps(a)[0] >= 1.0  # the gap the provider asked for, honoured
    assert seconds < 2.5
    scenario(attempts={"a": 2}, seconds=round(seconds, 3), gap=round(gaps(a)[0], 3))


def test_429_with_retry_after_fails_over_at_once_when_another_can(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "status=429,retry_after=5"})
    response, seconds = chat(r)
    assert response.status_code == 200 and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    assert seconds < 0.5
    again, _ = chat(r)  # a is cooling for its Retry-After: not asked again
    assert again.headers["x-router-attempts"] == "1" and a.chat_requests == 1
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


def test_persistent_429_without_retry_after_backs_off_then_gives_up(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a = one(sim, router, faults="status=429")
    response, seconds = chat(r)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert a.chat_requests == 3  # bounded by max_attempts
    assert [round(g) for g in gaps(a)] == [1, 2]  # the key cools 1 s, then 2 s: never a tight loop
    assert 2.7 < seconds < 4.5
    scenario(attempts={"a": 3}, seconds=round(seconds, 3), gaps=[round(g, 3) for g in gaps(a)])


def test_persistent_429_without_retry_after_fails_over_and_stays_bounded(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "status=429"})
    started = time.monotonic()
    answers = [chat(r)[0] for _ in range(40)]
    seconds = time.monotonic() - started
    assert all(x.status_code == 200 for x in answers)
    assert b.chat_requests == 40
    assert a.chat_requests <= 1 + math.ceil(seconds)  # one attempt per cooling period at most
    scenario(requests=40, attempts={"a": a.chat_requests, "b": b.chat_requests}, seconds=round(seconds, 3))


# -- errors and silence before the first token ------------------------------------------------


def test_500_once_is_retried(sim: Sim, router: Router, scenario: Any) -> None:
    r, a = one(sim, router, faults="status=500,times=1")
    response, seconds = chat(r)
    assert response.status_code == 200 and response.headers["x-router-attempts"] == "2"
    assert a.chat_requests == 2
    assert gaps(a)[0] >= 0.025 and seconds < 0.5  # a jittered backoff, not a tight loop
    scenario(attempts={"a": 2}, seconds=round(seconds, 3), gap=round(gaps(a)[0], 3))


@pytest.mark.parametrize("fault", ["status=503", "reset", "status=502,message=upstream connect error"])
def test_a_failing_provider_is_failed_over(sim: Sim, router: Router, scenario: Any, fault: str) -> None:
    r, a, b = pair(sim, router, a={"faults": fault})
    response, seconds = chat(r)
    assert response.status_code == 200 and response.headers["x-router-provider"] == "b"
    assert response.json()["model"] == "gpt-4o"  # the model that answered, from the provider that did
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    assert seconds < 0.5
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


@pytest.mark.parametrize("stream", [True, False])
def test_a_silent_provider_costs_one_timeout_then_fails_over(
    sim: Sim, router: Router, scenario: Any, stream: bool
) -> None:
    r, a, b = pair(sim, router, a={"faults": "silent"})
    response, seconds = chat(r, stream=stream)
    assert response.status_code == 200 and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    # A request the client did not stream is read as a stream upstream: first_token bounds it too.
    assert 0.5 <= seconds < 0.5 + 1.0
    scenario(stream=stream, attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


def test_a_provider_that_does_not_stream_is_bounded_by_response(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "silent"}, a_opts={"streaming": "false"})
    response, seconds = chat(r, stream=False)
    assert response.status_code == 200 and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    assert 2.0 <= seconds < 2.0 + 1.0  # routing.timeouts.response, not first_token
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


def test_a_slow_first_token_beyond_the_limit_fails_over(sim: Sim, router: Router, scenario: Any) -> None:
    r, a, b = pair(sim, router, a={"faults": "slow_first_token=3s"})
    response, seconds = chat(r, stream=True)
    chunks = events(response.text)
    assert chunks[-1] == "[DONE]" and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    assert 0.5 <= seconds < 1.1
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


def test_a_200_followed_by_silence_is_a_failure(sim: Sim, router: Router, scenario: Any) -> None:
    r, a, b = pair(sim, router, a={"faults": "stall=0"})  # headers and role chunk, then nothing
    response, seconds = chat(r, stream=True)
    assert events(response.text)[-1] == "[DONE]" and response.headers["x-router-provider"] == "b"
    assert (a.chat_requests, b.chat_requests) == (1, 1)
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


def test_a_malformed_event_before_the_answer_is_dropped_not_retried(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "malformed=1"})
    response, seconds = chat(r, stream=True)
    assert events(response.text)[-1] == "[DONE]" and response.headers["x-router-attempts"] == "1"
    assert (a.chat_requests, b.chat_requests) == (1, 0)
    scenario(attempts={"a": 1, "b": 1}, seconds=round(seconds, 3))


# -- after the commit point: never retried, never a truncated success ---------------------------


@pytest.mark.parametrize(
    ("fault", "code", "within"),
    [
        ("cut=2", "upstream_error", 0.5),
        ("stall=2", "upstream_timeout", 0.5 + 0.6),  # detected within the idle timeout (500 ms)
    ],
)
def test_a_stream_that_breaks_mid_answer_ends_with_an_error_event(
    sim: Sim, router: Router, scenario: Any, fault: str, code: str, within: float
) -> None:
    r, a, b = pair(sim, router, a={"faults": fault, "chunk_gap": 0.02})
    response, seconds = chat(r, stream=True)
    chunks = events(response.text)
    assert response.status_code == 200
    assert "[DONE]" not in chunks and chunks[-1]["error"]["code"] == code
    assert any(c.get("choices") and c["choices"][0]["delta"].get("content") for c in chunks[:-1])
    assert (a.chat_requests, b.chat_requests) == (1, 0)  # the client saw bytes: nothing is retried
    assert seconds < within
    scenario(attempts={"a": 1, "b": 0}, seconds=round(seconds, 3))


def test_a_stream_without_done_is_finalised(sim: Sim, router: Router, scenario: Any) -> None:
    r, a, _ = pair(sim, router, a={"faults": "no_done"})
    response, seconds = chat(r, stream=True)
    assert events(response.text)[-1] == "[DONE]" and a.chat_requests == 1
    scenario(attempts={"a": 1}, seconds=round(seconds, 3))


# -- the client's own errors: one attempt ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (
            "status=400,code=context_length_exceeded,message=This model's maximum context length is 128000",
            "context_length_exceeded",
        ),
        (
            "status=400,code=content_filter,message=Output blocked by content policy: violence",
            "content_filter",
        ),
    ],
)
def test_the_clients_own_errors_are_answered_after_one_attempt(
    sim: Sim, router: Router, scenario: Any, fault: str, code: str
) -> None:
    r, a, b = pair(sim, router, a={"faults": fault})
    response, seconds = chat(r)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"] == fault.split("message=")[1]  # the provider's reason
    assert (a.chat_requests, b.chat_requests) == (1, 0)
    scenario(attempts={"a": 1, "b": 0}, seconds=round(seconds, 3))


# -- health over time ----------------------------------------------------------------------------


def test_a_primary_down_for_a_while_then_recovering(sim: Sim, router: Router, scenario: Any) -> None:
    r, a, _b = pair(
        sim, router, a={"faults": "status=500"}, a_opts={"priority": "1"}, b_opts={"priority": "2"}
    )
    outage_started = time.monotonic()
    during = []
    while time.monotonic() - outage_started < 3.5:
        response, _ = chat(r)
        during.append(response)
        time.sleep(0.02)
    assert all(x.status_code == 200 and x.headers["x-router-provider"] == "b" for x in during)
    trials = gaps(a)[2:]  # after the breaker opened on the third consecutive failure
    assert all(gap >= 0.9 for gap in trials), trials  # at most one trial per cooldown
    outage_attempts = a.chat_requests
    a.set_faults("")
    recovered = time.monotonic()
    while True:
        response, _ = chat(r)
        if response.headers["x-router-provider"] == "a":
            break
        time.sleep(0.02)
    back_after = time.monotonic() - recovered
    assert back_after <= 2.0 * 1.1 + 1.0  # within one (capped, jittered) cooldown, and a request
    assert all(chat(r)[0].headers["x-router-provider"] == "a" for _ in range(5))
    scenario(
        outage_requests=len(during),
        outage_attempts_on_a=outage_attempts,
        trial_gaps=[round(g, 3) for g in trials],
        back_on_primary_after=round(back_after, 3),
    )


def test_with_one_of_two_providers_failing_every_request_clients_see_only_successes(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "status=500"}, routing="{strategy: weighted}")
    started = time.monotonic()
    answers = [chat(r)[0] for _ in range(100)]
    seconds = time.monotonic() - started
    assert [x.status_code for x in answers] == [200] * 100
    assert a.chat_requests <= 3 + 1  # three to open the breaker (30 s cooldown), a trial at most
    assert b.chat_requests == 100
    scenario(requests=100, attempts={"a": a.chat_requests, "b": b.chat_requests}, seconds=round(seconds, 3))


def test_weights_are_honoured(sim: Sim, router: Router, scenario: Any) -> None:
    r, _a, _b = pair(sim, router, routing="{strategy: weighted}", a_opts={"weight": "3"})
    n = 400
    with httpx.Client(headers=AUTH, timeout=10) as client:
        served = Counter(
            client.post(r.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}).headers[
                "x-router-provider"
            ]
            for _ in range(n)
        )
    share, p = served["a"] / n, 0.75
    assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / n), served  # 5 sigma: about one in 3.5 million
    scenario(requests=n, served=dict(served), share_a=share)


def test_the_retry_budget_caps_amplification_when_everything_fails(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a = one(sim, router, faults="status=500")
    with httpx.Client(headers=AUTH, timeout=10) as client:
        statuses = Counter(
            client.post(
                r.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": HELLO}
            ).status_code
            for _ in range(100)
        )
    assert statuses == {502: 100}
    assert 100 <= a.chat_requests <= 100 + 20 + 10  # 20 % of requests plus a floor of 10, not 300
    scenario(requests=100, attempts={"a": a.chat_requests})


def test_conversations_stick_and_a_drain_moves_only_its_own(sim: Sim, router: Router, scenario: Any) -> None:
    sa, sb = sim("trinity"), sim("real200")
    text = config_yaml(
        provider_yaml("a", sa, ["gpt-4o"]),
        provider_yaml("b", sb, ["gpt-4o"]),
        routing="{strategy: weighted, sticky: conversation}",
    )
    r = router(text.replace("providers:", "admin: {key: admin-secret}\nproviders:"))

    def served(conversation: str) -> str:
        response = httpx.post(
            r.url + "/v1/chat/completions",
            headers={**AUTH, "X-Conversation-Id": conversation},
            json={"model": "gpt-4o", "messages": HELLO},
        )
        return response.headers["x-router-provider"]

    conversations = [f"conversation-{i}" for i in range(40)]
    first = {c: served(c) for c in conversations}
    assert all(served(c) == first[c] for c in conversations for _ in range(2))
    assert set(first.values()) == {"a", "b"}
    drained = httpx.post(r.url + "/admin/providers/a/drain", headers={"Authorization": "Bearer admin-secret"})
    assert drained.json() == {"provider": "a", "drained": True}
    after = {c: served(c) for c in conversations}
    assert all(after[c] == "b" for c in conversations)
    assert all(after[c] == first[c] for c in conversations if first[c] == "b")  # b's conversations stayed
    scenario(conversations=len(conversations), on_a=sum(v == "a" for v in first.values()))


# -- what the breaker learns from concurrent and streamed traffic ---------------------------------


def test_a_burst_of_failures_in_flight_opens_the_breaker_once(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, _b = pair(
        sim,
        router,
        a={"faults": "status=500", "latency": 0.3},
        a_opts={"priority": "1"},
        b_opts={"priority": "2"},
        routing="{strategy: ordered, breaker: {failures: 3, cooldown: 1s, max_cooldown: 8s}}",
    )
    with ThreadPoolExecutor(12) as pool:  # twelve requests in flight when a fails them all
        assert list(pool.map(lambda _: chat(r)[0].status_code, range(12))) == [200] * 12
    a.set_faults("")
    a.latency = 0
    recovered = time.monotonic()
    while chat(r)[0].headers["x-router-provider"] != "a":
        time.sleep(0.02)
    back_after = time.monotonic() - recovered
    assert back_after < 1.1 + 1.0  # one 1 s cooldown, not the 8 s cap that twelve openings would give
    scenario(in_flight_failures=12, back_on_primary_after=round(back_after, 3))


def test_a_half_open_key_gets_exactly_one_trial_under_concurrency(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, _b = pair(
        sim,
        router,
        a={"faults": "status=500,times=3"},
        a_opts={"priority": "1"},
        b_opts={"priority": "2"},
        routing="{strategy: ordered, breaker: {failures: 3, cooldown: 300ms, max_cooldown: 300ms}}",
    )
    for _ in range(3):
        chat(r)  # three failures on a: its breaker opens
    assert a.chat_requests == 3
    time.sleep(0.4)  # the cooldown ends: half-open
    a.set_faults("slow_first_token=1s")  # the trial takes a second
    with ThreadPoolExecutor(10) as pool:
        served = list(pool.map(lambda _: chat(r)[0].headers["x-router-provider"], range(10)))
    assert served.count("a") == 1 and a.chat_requests == 4  # one trial; the rest went to b
    scenario(concurrent=10, trials_on_a=served.count("a"))


def test_streams_that_break_after_the_commit_point_open_the_breaker(
    sim: Sim, router: Router, scenario: Any
) -> None:
    r, a, b = pair(sim, router, a={"faults": "cut=2", "chunk_gap": 0.02})
    cut = [events(chat(r, stream=True)[0].text)[-1] for _ in range(3)]
    assert all(c != "[DONE]" and c["error"]["code"] == "upstream_error" for c in cut)
    response, _ = chat(r, stream=True)
    assert response.headers["x-router-provider"] == "b"  # three broken streams opened a's breaker
    assert (a.chat_requests, b.chat_requests) == (3, 1)
    scenario(broken_streams=3, attempts={"a": 3, "b": 1})


def test_an_error_event_before_the_first_token_is_read_by_the_table(
    sim: Sim, router: Router, scenario: Any
) -> None:
    fault = "stream_error=0,code=content_filter,message=Output blocked by content policy"
    r, a, b = pair(sim, router, a={"faults": fault})
    response, seconds = chat(r, stream=True)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Output blocked by content policy",
        "type": "invalid_request_error",
        "param": None,
        "code": "content_filter",
    }
    assert (a.chat_requests, b.chat_requests) == (1, 0)  # the client's problem: one attempt
    scenario(attempts={"a": 1, "b": 0}, seconds=round(seconds, 3))
