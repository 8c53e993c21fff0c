"""The breaker and the other key states, on an injected clock."""

from __future__ import annotations

import textwrap

import pytest

from router.classify import read_answer, to_error
from router.config import Breaker, Target, parse
from router.errors import UpstreamConnectError, UpstreamTimeout
from router.health import EXHAUSTED_COOLDOWN, Health, Status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CONFIG = parse(
    textwrap.dedent("""
    providers:
      a: {base_url: "http://a", keys: [ka, kb], models: {m: {}, n: {}}}
      b: {base_url: "http://b", keys: [kc], models: {m: {}}}
"""),
    env={},
)


def setup(failures: int = 3) -> tuple[Health, Clock, list[Target]]:
    clock = Clock()
    targets = list(CONFIG.targets["m"]) + list(CONFIG.targets["n"])
    health = Health(
        targets, Breaker(failures=failures, cooldown=30, max_cooldown=300), clock=clock, jitter=lambda: 0.5
    )  # no jitter: cooldowns are exact
    return health, clock, targets


def status(health: Health, target: Target) -> Status:
    return health.view(target).status


def test_opens_after_consecutive_failures_only() -> None:
    health, _, (a, *_) = setup()
    health.failed(a)
    health.failed(a)
    health.succeeded(a)  # a success resets the count
    health.failed(a)
    health.failed(a)
    assert status(health, a) is Status.CLOSED
    health.failed(a)
    assert status(health, a) is Status.OPEN


def test_cooldown_then_exactly_one_trial_then_closed() -> None:
    health, clock, (a, *_) = setup()
    for _ in range(3):
        health.failed(a)
    assert health.view(a).ready_at == pytest.approx(clock.now + 30)
    clock.now += 30
    assert status(health, a) is Status.HALF_OPEN
    health.begin(a)
    assert status(health, a) is Status.OPEN  # one trial at a time: others see it open
    health.succeeded(a)
    health.end(a)
    assert status(health, a) is Status.CLOSED


def test_a_failed_trial_reopens_with_a_longer_capped_cooldown() -> None:
    health, clock, (a, *_) = setup()
    for _ in range(3):
        health.failed(a)
    cooldowns = []
    for _ in range(12):
        clock.now = health.view(a).ready_at
        health.begin(a)
        health.failed(a)
        health.end(a)
        cooldowns.append(health.view(a).ready_at - clock.now)
    assert cooldowns[:3] == [60, 90, 120]  # 30 s x n
    assert max(cooldowns) == 300  # capped at max_cooldown


def test_jitter_keeps_cooldowns_within_ten_percent() -> None:
    seen = []
    for jitter in (0.0, 1.0):
        clock = Clock()
        health = Health(
            CONFIG.targets["m"],
            Breaker(failures=1, cooldown=30, max_cooldown=300),
            clock=clock,
            jitter=lambda j=jitter: j,
        )
        health.failed(CONFIG.targets["m"][0])
        seen.append(health.view(CONFIG.targets["m"][0]).ready_at - clock.now)
    assert seen == [pytest.approx(27), pytest.approx(33)]


def test_a_release_frees_the_trial() -> None:
    health, clock, (a, *_) = setup(failures=1)
    health.failed(a)
    clock.now += 30
    health.begin(a)
    health.release(a)  # the client left mid-trial
    assert status(health, a) is Status.HALF_OPEN


def test_rate_limits_cool_for_retry_after_or_a_growing_backoff() -> None:
    health, clock, (a, *_) = setup()
    health.rate_limited(a, 5.0)
    assert status(health, a) is Status.COOLING and health.view(a).ready_at == clock.now + 5
    clock.now += 5
    assert status(health, a) is Status.CLOSED
    waits = []
    for _ in range(4):
        health.rate_limited(a, None)
        waits.append(health.view(a).ready_at - clock.now)
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8]


def test_verdicts_from_provider_answers() -> None:
    health, clock, (a, b, c, _a_n, b_n) = setup()
    health.record(a, to_error("a", read_answer(402, b'{"error":{"message":"no money"}}')))
    assert status(health, a) is Status.EXHAUSTED
    assert health.view(a).ready_at == clock.now + EXHAUSTED_COOLDOWN
    health.record(b, to_error("a", read_answer(401, b'{"error":{"message":"bad key"}}')))
    assert status(health, b) is Status.BROKEN and status(health, b_n) is Status.BROKEN  # the key, every model
    health.record(c, to_error("b", read_answer(503, b'{"error":{"message":"x","code":"model_not_found"}}')))
    assert status(health, c) is Status.NOT_SERVED
    health.record(c, to_error("b", read_answer(400, b'{"error":{"message":"too long"}}')))
    for _ in range(5):
        health.record(c, to_error("b", read_answer(400, b'{"error":{"message":"too long"}}')))
    assert health.report([c])[0]["consecutive_failures"] == 0  # the client's faults never count


def test_not_served_is_per_model_and_never_cools_the_key() -> None:
    health, _, (a, _b, _c, a_n, _b_n) = setup()
    health.not_served(a)
    assert status(health, a) is Status.NOT_SERVED
    assert status(health, a_n) is Status.CLOSED


def test_transport_failures_count() -> None:
    health, _, (a, *_) = setup(failures=2)
    health.record(a, UpstreamTimeout("a: slow", provider="a"))
    health.record(a, UpstreamConnectError("a: down", provider="a"))
    assert status(health, a) is Status.OPEN


def test_drain_and_undrain_forgive_broken_keys() -> None:
    health, _, (a, b, c, *_) = setup()
    health.rejected(a)
    health.drain("a")
    assert status(health, b) is Status.DRAINED and status(health, c) is Status.CLOSED
    health.undrain("a")
    assert status(health, a) is Status.CLOSED and status(health, b) is Status.CLOSED


def test_ttft_is_an_ewma_and_inflight_counts() -> None:
    health, _, (a, *_) = setup()
    health.begin(a)
    health.begin(a)
    assert health.view(a).inflight == 2
    health.succeeded(a, ttft=1.0)
    health.succeeded(a, ttft=2.0)
    assert health.view(a).ttft == pytest.approx(1.3)
    health.end(a)
    health.end(a)
    health.end(a)
    assert health.view(a).inflight == 0
