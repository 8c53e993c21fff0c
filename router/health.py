"""What router knows about each provider key's health: a breaker, cool-downs, drains.

One KeyHealth per (provider, key), shared by every model served through that key.

    closed ──3 consecutive failures──▶ open ──cooldown ends──▶ half-open ──trial ok──▶ closed
                                        ▲                          │
                                        └──────trial fails─────────┘   (cooldown 30 s x n, capped,
                                                                        jittered +-10 %)
Besides the breaker a key can be
    cooling    rate limited by the provider: unusable until its Retry-After (or a backoff)
    exhausted  out of quota (402 / insufficient_quota): a long cooldown, visible to ops
    broken     our key was refused (401 / 403): unusable until config reload or undrain
    drained    by an operator, for the whole provider
and, for one model only, not served (the reseller has no channel for it): skipped for a
while without counting against the key.

Every attempt holds a KeyUse from begin() to end(). Only the use that took a half-open
key's one trial may settle it; failures of attempts that were already in flight when the
breaker opened are stragglers and change nothing. Failures that count: connect errors,
resets, 5xx, timeouts and broken streams; never the client's 4xx (the key did answer) and
never the request's own deadline. Time comes from an injected clock.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from . import logs
from .classify import Verdict
from .config import Breaker, Target
from .errors import DeadlineExceeded, UpstreamError

log = logging.getLogger("router.health")

EXHAUSTED_COOLDOWN = 15 * 60.0
"""A key out of quota is tried again after this long: quotas roll over, accounts get topped up."""
NOT_SERVED_FOR = 60.0
"""How long a 'no channel for this model' answer keeps the model off that key."""
RATE_LIMIT_BACKOFF = (1.0, 30.0)
"""Cooling after a 429 without Retry-After: starts here, doubles per consecutive 429, capped."""
EWMA_WEIGHT = 0.3


class Status(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"
    COOLING = "cooling"
    EXHAUSTED = "exhausted"
    BROKEN = "broken"
    DRAINED = "drained"
    NOT_SERVED = "not_served"


@dataclass(frozen=True, slots=True)
class View:
    """One target as routing sees it at one moment."""

    status: Status
    ready_at: float
    """When its cooldown ends (or ended); inf for states that waiting does not end."""
    inflight: int = 0
    latency: float | None = None
    """Recent latency (EWMA) of the kind the request needs: time to first token for streams,
    time to the whole answer otherwise. None until measured."""

    @property
    def usable(self) -> bool:
        return self.status in (Status.CLOSED, Status.HALF_OPEN)


@dataclass(slots=True)
class KeyHealth:
    name: str = ""
    """provider/key, for log lines."""
    failures: int = 0
    """Consecutive breaker failures while closed."""
    opened: int = 0
    """Consecutive times the breaker opened: the cooldown multiplier. 0 when closed."""
    open_until: float = 0.0
    trial: bool = False
    """A half-open trial request is in flight (held by one KeyUse)."""
    cooling_until: float = 0.0
    rate_limits: int = 0
    exhausted_until: float = 0.0
    broken: bool = False
    inflight: int = 0
    ttft: float | None = None
    answer_time: float | None = None
    last_used: float = -float("inf")
    not_served: dict[str, float] = field(default_factory=dict)


def key_id(target: Target) -> str:
    return f"{target.provider.name}/{target.key.name}"


class KeyUse:
    """One attempt's hold on a key: in flight until end(), and perhaps its one trial."""

    __slots__ = ("_health", "_key", "_open", "target", "trial")

    def __init__(self, health: Health, key: KeyHealth, target: Target, *, trial: bool):
        self._health, self._key, self.target, self.trial = health, key, target, trial
        self._open = True

    def succeeded(self, *, latency: float | None = None, stream: bool = False, busy: bool = False) -> None:
        """The key answered: the breaker closes. `busy`: it answered 429, so its backoff goes on."""
        self._health._close(self._key, rate_limited=busy)
        if self.trial:
            self.trial = self._key.trial = False
        if latency is not None:
            self._health.observe(self.target, latency, stream=stream)

    def failed(self) -> None:
        """A breaker failure. A trial that fails reopens the breaker; a straggler changes nothing."""
        if self.trial:
            self.trial = False
            self._key.trial = False
            self._health._open(self._key)
        else:
            self._health.failed(self.target)

    def record(self, error: UpstreamError) -> None:
        """The attempt failed with `error`: what that says about the key."""
        if isinstance(error, DeadlineExceeded):
            return  # the request's own time ran out: nothing learned about the key
        verdict = getattr(error, "verdict", None)
        if verdict is None:  # no HTTP answer: connect error, reset, timeout, broken stream
            self.failed()
            return
        _BY_VERDICT[Verdict(verdict)](self, error)

    def end(self) -> None:
        """The attempt is over. A trial its outcome did not settle is freed for another."""
        if self._open:
            self._open = False
            self._key.inflight = max(0, self._key.inflight - 1)
            if self.trial:
                self.trial = self._key.trial = False


def _cooled(lease: KeyUse, error: UpstreamError) -> None:
    lease.succeeded(busy=True)  # the provider is up, only busy
    lease._health.rate_limited(lease.target, getattr(error, "retry_after", None))


_BY_VERDICT: dict[Verdict, Callable[[KeyUse, UpstreamError], None]] = {
    Verdict.CLIENT_FAULT: lambda lease, error: lease.succeeded(),  # a proper answer to a bad request
    Verdict.RATE_LIMITED: _cooled,
    Verdict.QUOTA_EXHAUSTED: lambda lease, error: lease._health.exhausted(lease.target),
    Verdict.KEY_REJECTED: lambda lease, error: lease._health.rejected(lease.target),
    Verdict.NOT_SERVED: lambda lease, error: lease._health.not_served(lease.target),
    Verdict.SERVER_ERROR: lambda lease, error: lease.failed(),
}


class Health:
    def __init__(
        self,
        targets: Iterable[Target],
        breaker: Breaker,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ):
        self._breaker = breaker
        self._clock = clock
        self._jitter = jitter
        self._keys: dict[str, KeyHealth] = {}
        self._providers: dict[str, str] = {}
        for target in targets:
            self._keys.setdefault(key_id(target), KeyHealth(key_id(target)))
            self._providers[key_id(target)] = target.provider.name
        self._drained: set[str] = set()

    # -- what routing sees --------------------------------------------------------------

    def view(self, target: Target, now: float | None = None, *, stream: bool = False) -> View:
        now = self._clock() if now is None else now
        key = self._keys[key_id(target)]
        status, ready_at = self._status(target, key, now)
        return View(status, ready_at, key.inflight, key.ttft if stream else key.answer_time)

    def _status(
        self, target: Target, key: KeyHealth, now: float, *, per_model: bool = True
    ) -> tuple[Status, float]:
        never = float("inf")
        if target.provider.name in self._drained:
            return Status.DRAINED, never
        if key.broken:
            return Status.BROKEN, never
        if key.exhausted_until > now:
            return Status.EXHAUSTED, key.exhausted_until
        if per_model and key.not_served.get(target.route.name, 0.0) > now:
            return Status.NOT_SERVED, key.not_served[target.route.name]
        if key.cooling_until > now:  # a provider's Retry-After is honoured whatever the breaker says
            return Status.COOLING, key.cooling_until
        if key.open_until > now:
            return Status.OPEN, key.open_until
        if key.opened:
            # Cooldown over: exactly one trial request at a time; while it runs, the key is
            # as good as open (routing may still fail open to it).
            return (Status.OPEN, key.open_until) if key.trial else (Status.HALF_OPEN, now)
        return Status.CLOSED, now

    # -- attempts -------------------------------------------------------------------------

    def begin(self, target: Target, *, fail_open: bool = False) -> KeyUse | None:
        """Hold `target` for one attempt; None if it may not be tried now after all (another
        request took its trial meanwhile) unless routing is failing open to it."""
        key = self._keys[key_id(target)]
        now = self._clock()
        status, _ = self._status(target, key, now)
        trial = status is Status.HALF_OPEN
        if not (trial or status is Status.CLOSED or fail_open):
            return None
        key.inflight += 1
        key.last_used = now
        key.trial = key.trial or trial
        return KeyUse(self, key, target, trial=trial)

    def observe(self, target: Target, seconds: float, *, stream: bool) -> None:
        """A latency sample for the `latency` strategy: time to first token, or to the answer."""
        key = self._keys[key_id(target)]
        if stream:
            key.ttft = seconds if key.ttft is None else EWMA_WEIGHT * seconds + (1 - EWMA_WEIGHT) * key.ttft
        else:
            old = key.answer_time
            key.answer_time = seconds if old is None else EWMA_WEIGHT * seconds + (1 - EWMA_WEIGHT) * old

    # -- what outcomes do to a key ----------------------------------------------------------

    def succeeded(self, target: Target) -> None:
        self._close(self._keys[key_id(target)])

    def _close(self, key: KeyHealth, *, rate_limited: bool = False) -> None:
        if key.opened:
            logs.event(log, logging.WARNING, "breaker closed", key=key.name)
        key.failures = key.opened = 0
        key.open_until = 0.0
        if not rate_limited:
            key.rate_limits = 0

    def failed(self, target: Target) -> None:
        """A breaker failure outside a trial: counts while closed; changes nothing once open."""
        key = self._keys[key_id(target)]
        if key.opened:
            return  # a straggler from before the breaker opened; the trial decides
        key.failures += 1
        if key.failures >= self._breaker.failures:
            self._open(key)

    def _open(self, key: KeyHealth) -> None:
        key.opened += 1
        cooldown = min(self._breaker.cooldown * key.opened, self._breaker.max_cooldown)
        key.open_until = self._clock() + cooldown * (0.9 + 0.2 * self._jitter())
        logs.event(
            log, logging.WARNING, "breaker opened", key=key.name, times=key.opened, cooldown_s=cooldown
        )

    def rate_limited(self, target: Target, retry_after: float | None) -> None:
        key = self._keys[key_id(target)]
        if retry_after is None:
            first, cap = RATE_LIMIT_BACKOFF
            retry_after = min(first * 2**key.rate_limits, cap) * (0.9 + 0.2 * self._jitter())
            key.rate_limits += 1
        key.cooling_until = max(key.cooling_until, self._clock() + retry_after)

    def exhausted(self, target: Target) -> None:
        self._keys[key_id(target)].exhausted_until = self._clock() + EXHAUSTED_COOLDOWN

    def rejected(self, target: Target) -> None:
        """Our key was refused (401/403): an ops problem, until reload or undrain."""
        self._keys[key_id(target)].broken = True

    def not_served(self, target: Target) -> None:
        self._keys[key_id(target)].not_served[target.route.name] = self._clock() + NOT_SERVED_FOR

    # -- operators ------------------------------------------------------------------------

    def adopt(self, old: Health) -> None:
        """After a reload: keep what was known about keys that are still configured (breakers,
        cool-downs, refused or exhausted keys, latency) and the operator's drains."""
        for name in self._keys.keys() & old._keys.keys():
            key = self._keys[name] = replace(old._keys[name])  # a copy: the old runtime runs on a while
            key.broken = False  # refused until reload: the reload may carry the replaced key
            key.trial = False
            key.inflight = 0
            key.not_served = dict(key.not_served)
        self._drained |= old._drained & set(self._providers.values())

    def drain(self, provider: str) -> None:
        self._drained.add(provider)

    def undrain(self, provider: str) -> None:
        """Back into rotation, and forgive its keys: a refused key may have been replaced."""
        self._drained.discard(provider)
        for name, key in self._keys.items():
            if self._providers[name] == provider:
                key.broken = False
                key.exhausted_until = 0.0

    def drained(self, provider: str) -> bool:
        return provider in self._drained

    def idle_for(self, target: Target) -> float:
        """Seconds since an attempt last went through this target's key."""
        return self._clock() - self._keys[key_id(target)].last_used

    def report(self, targets: Iterable[Target]) -> list[dict[str, object]]:
        """Per key, for GET /admin/providers."""
        now = self._clock()
        rows: dict[str, dict[str, object]] = {}
        for target in targets:
            name = key_id(target)
            if name in rows:
                continue
            key = self._keys[name]
            status, ready_at = self._status(target, key, now, per_model=False)
            rows[name] = {
                "provider": target.provider.name,
                "key": target.key.name,
                "status": str(status),
                "retry_in_seconds": round(ready_at - now, 3) if now < ready_at < float("inf") else None,
                "consecutive_failures": key.failures,
                "inflight": key.inflight,
                "ttft_ms": round(key.ttft * 1000, 3) if key.ttft is not None else None,
                "answer_ms": round(key.answer_time * 1000, 3) if key.answer_time is not None else None,
                "not_served": sorted(m for m, until in key.not_served.items() if until > now),
            }
        return list(rows.values())
