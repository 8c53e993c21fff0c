"""The breaker and the other key states, on an injected clock."""

from __future__ import annotations

import textwrap

import pytest

from router.classify import read_answer, to_error
from router.config import Breaker, Target, parse
from router.errors import DeadlineExceeded, UpstreamConnectError, UpstreamTimeout
from router.health import EXHAUSTED_COOLDOWN, Health, KeyUse, Status


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


def lease(health: Health, target: Target, **kw: bool) -> KeyUse:
    held = health.begin(target, **kw)
    assert held is not None
    return held


def fail(health: Health, target: Target) -> None:
    held = lease(health, target, fail_open=True)
    held.failed()
    held.end()


def open_breaker(health: Health, target: Target) -> None:
    for _ in range(3):
        fail(health, target)
    assert status(health, target) is Status.OPEN


def test_opens_after_consecutive_failures_only() -> None:
    health, _, (a, *_) = setup()
    fail(health, a)
    fail(health, a)
    health.succeeded(a)  # a success resets the count
    fail(health, a)
    fail(health, a)
    assert status(health, a) is Status.CLOSED
    fail(health, a)
    assert status(health, a) is Status.OPEN


def test_cooldown_then_exactly_one_trial_then_closed() -> None:
    health, clock, (a, *_) = setup()
    open_breaker(health, a)
    assert health.view(a).ready_at == pytest.approx(clock.now + 30)
    clock.now += 30
    assert status(health, a) is Status.HALF_OPEN
    trial = lease(health, a)
    assert trial.trial
    assert status(health, a) is Status.OPEN  # one trial at a time: others see it open
    assert health.begin(a) is None  # a request that planned on the half-open key meanwhile must replan
    trial.succeeded()
    trial.end()
    assert status(health, a) is Status.CLOSED


def test_a_failed_trial_reopens_with_a_longer_capped_cooldown() -> None:
    health, clock, (a, *_) = setup()
    open_breaker(health, a)
    cooldowns = []
    for _ in range(12):
        clock.now = health.view(a).ready_at
        trial = lease(health, a)
        trial.failed()
        trial.end()
        cooldowns.append(health.view(a).ready_at - clock.now)
    assert cooldowns[:3] == [60, 90, 120]  # 30 s x n
    assert max(cooldowns) == 300  # capped at max_cooldown


def test_failures_of_requests_already_in_flight_do_not_push_the_cooldown() -> None:
    health, clock, (a, *_) = setup()
    in_flight = [lease(health, a) for _ in range(20)]  # then the provider dies
    for held in in_flight:
        held.failed()
        held.end()
    assert health.view(a).ready_at - clock.now == 30  # one opening, not twenty
    clock.now += 30
    assert status(health, a) is Status.HALF_OPEN


def test_jitter_keeps_cooldowns_within_ten_percent() -> None:
    seen = []
    for jitter in (0.0, 1.0):
        clock = Clock()
        target = CONFIG.targets["m"][0]
        health = Health(
            CONFIG.targets["m"],
            Breaker(failures=1, cooldown=30, max_cooldown=300),
            clock=clock,
            jitter=lambda j=jitter: j,
        )
        fail(health, target)
        seen.append(health.view(target).ready_at - clock.now)
    assert seen == [pytest.approx(27), pytest.approx(33)]


def test_a_trial_whose_client_left_is_freed_for_another() -> None:
    health, clock, (a, *_) = setup()
    open_breaker(health, a)
    clock.now += 30
    trial = lease(health, a)
    straggler = lease(health, a, fail_open=True)
    straggler.end()  # another attempt ending frees nothing it does not hold
    assert status(health, a) is Status.OPEN
    trial.end()  # the trial's client left: nothing learned, the trial is free again
    assert status(health, a) is Status.HALF_OPEN


def test_a_trial_answered_with_the_clients_own_error_closes_the_breaker() -> None:
    health, clock, (a, *_) = setup()
    open_breaker(health, a)
    clock.now += 30
    trial = lease(health, a)
    trial.record(to_error("a", read_answer(400, b'{"error":{"code":"context_length_exceeded"}}')))
    trial.end()
    assert status(health, a) is Status.CLOSED  # the key answered properly


def test_the_request_deadline_says_nothing_about_the_key() -> None:
    health, _, (a, *_) = setup(failures=1)
    held = lease(health, a)
    held.record(DeadlineExceeded("a: the request deadline passed mid-answer", provider="a"))
    held.end()
    assert status(health, a) is Status.CLOSED


def test_rate_limits_cool_for_retry_after_or_a_growing_backoff() -> None:
    health, clock, (a, *_) = setup()
    health.rate_limited(a, 5.0)
    assert status(health, a) is Status.COOLING and health.view(a).ready_at == clock.now + 5
    clock.now += 5
    assert status(health, a) is Status.CLOSED
    waits = []
    for _ in range(4):
        held = lease(health, a)
        held.record(to_error("a", read_answer(429, b"{}")))
        held.end()
        waits.append(health.view(a).ready_at - clock.now)
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8]


def test_retry_after_is_honoured_on_a_key_whose_breaker_is_half_open() -> None:
    health, clock, (a, *_) = setup()
    open_breaker(health, a)
    clock.now += 30
    trial = lease(health, a)
    trial.record(to_error("a", read_answer(429, b"{}"), retry_after=30.0))
    trial.end()
    assert status(health, a) is Status.COOLING and health.view(a).ready_at == clock.now + 30


def test_verdicts_from_provider_answers() -> None:
    health, clock, (a, b, c, _a_n, b_n) = setup()

    def record(target: Target, status_code: int, body: bytes) -> None:
        held = lease(health, target, fail_open=True)
        held.record(to_error(target.provider.name, read_answer(status_code, body)))
        held.end()

    record(a, 402, b'{"error":{"message":"no money"}}')
    assert status(health, a) is Status.EXHAUSTED
    assert health.view(a).ready_at == clock.now + EXHAUSTED_COOLDOWN
    record(b, 401, b'{"error":{"message":"bad key"}}')
    assert status(health, b) is Status.BROKEN and status(health, b_n) is Status.BROKEN  # the key, every model
    record(c, 503, b'{"error":{"message":"x","code":"model_not_found"}}')
    assert status(health, c) is Status.NOT_SERVED
    for _ in range(5):
        record(CONFIG.targets["m"][2], 400, b'{"error":{"message":"too long"}}')
    assert health.report([c])[0]["consecutive_failures"] == 0  # the client's faults never count


def test_not_served_is_per_model_and_never_cools_the_key() -> None:
    health, _, (a, _b, _c, a_n, _b_n) = setup()
    health.not_served(a)
    assert status(health, a) is Status.NOT_SERVED
    assert status(health, a_n) is Status.CLOSED
    assert health.report([a])[0]["status"] == "closed"  # the key itself is fine


def test_transport_failures_count() -> None:
    health, _, (a, *_) = setup(failures=2)
    for error in (UpstreamTimeout("a: slow", provider="a"), UpstreamConnectError("a: down", provider="a")):
        held = lease(health, a)
        held.record(error)
        held.end()
    assert status(health, a) is Status.OPEN


def test_drain_and_undrain_forgive_broken_keys() -> None:
    health, _, (a, b, c, *_) = setup()
    health.rejected(a)
    health.drain("a")
    assert status(health, b) is Status.DRAINED and status(health, c) is Status.CLOSED
    health.undrain("a")
    assert status(health, a) is Status.CLOSED and status(health, b) is Status.CLOSED


def test_latency_is_an_ewma_kept_apart_for_streams_and_whole_answers() -> None:
    health, _, (a, *_) = setup()
    first, second = lease(health, a), lease(health, a)
    assert health.view(a).inflight == 2
    first.succeeded(latency=1.0)
    second.succeeded(latency=2.0)
    health.observe(a, 0.1, stream=True)
    assert health.view(a).latency == pytest.approx(1.3)
    assert health.view(a, stream=True).latency == pytest.approx(0.1)
    first.end()
    first.end()  # ending twice counts once
    second.end()
    assert health.view(a).inflight == 0


def test_a_reload_keeps_breakers_and_drains_but_gives_a_refused_key_another_chance() -> None:
    old, clock, targets = setup(failures=1)
    a0, a1, b0 = targets[0], targets[1], targets[2]
    lease(old, a0).failed()
    old.rejected(a1)
    old.drain("b")
    new = Health(targets, Breaker(failures=1, cooldown=30, max_cooldown=300), clock=clock, jitter=lambda: 0.5)
    new.adopt(old)
    assert status(new, a0) is Status.OPEN
    assert status(new, a1) is Status.CLOSED  # its key may have been replaced in the new file
    assert status(new, b0) is Status.DRAINED
    new.rejected(a0)  # the two runtimes no longer share what they know
    assert status(old, a0) is Status.OPEN
