from __future__ import annotations

import random

from router.classify import read_answer, to_error
from router.errors import NoProviderAvailable, ParamNotAllowed, UpstreamConnectError, UpstreamTimeout
from router.failover import BACKOFF_CAP, Failures, RetryBudget, backoff


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_is_jittered_never_zero_and_capped() -> None:
    rng = random.Random(3)
    for retry in range(1, 12):
        delays = [backoff(retry, rng) for _ in range(200)]
        step = min(0.05 * 2 ** (retry - 1), BACKOFF_CAP)
        assert min(delays) >= step / 2 and max(delays) <= step
        assert len(set(delays)) > 100


def test_retry_budget_is_a_share_of_requests_plus_a_floor_over_a_sliding_window() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, floor=2, window=10, clock=clock)
    for _ in range(50):
        budget.request()
    allowed = sum(budget.try_retry() for _ in range(30))
    assert allowed == 12  # 0.2 x 50 + 2
    clock.now += 5
    assert not budget.try_retry()  # still within the window
    clock.now += 6
    assert budget.try_retry()  # the window slid past them


def rate_limited(after: float | None) -> object:
    return to_error("p", read_answer(429, b"{}"), retry_after=after)


def test_final_error_rules() -> None:
    only_limits = Failures("m", errors=[rate_limited(9.0), rate_limited(2.5)])  # type: ignore[list-item]
    error = only_limits.final()
    assert error.http_status == 429 and error.headers["Retry-After"] == "3"
    mixed = Failures("m", errors=[rate_limited(1.0), UpstreamConnectError("p: down", provider="p")])  # type: ignore[list-item]
    assert mixed.final().http_status == 502
    timed_out = Failures(
        "m", errors=[UpstreamConnectError("p: down", provider="p"), UpstreamTimeout("q: slow")]
    )
    assert timed_out.final().http_status == 504
    late = Failures("m", errors=[UpstreamConnectError("p: down", provider="p")], deadline_passed=True)
    assert late.final().http_status == 504 and "deadline" in late.final().message
    assert isinstance(Failures("m").final(), NoProviderAvailable)
    assert Failures("m").final().http_status == 503
    waiting = Failures("m", waiting=12.2).final()
    assert waiting.http_status == 429 and waiting.headers["Retry-After"] == "13"
    refused = ParamNotAllowed("no", param="x")
    assert Failures("m", refusal=refused).final() is refused
