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

Failures that count against the breaker: connect errors, resets, 5xx and timeouts; never
the client's 4xx. Time comes from an injected clock so tests need not sleep.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from .classify import Verdict
from .config import Breaker, Target
from .errors import UpstreamError

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
    ttft: float | None = None
    """Recent time to first token (EWMA), seconds; None until measured."""

    @property
    def usable(self) -> bool:
        return self.status in (Status.CLOSED, Status.HALF_OPEN)


@dataclass(slots=True)
class KeyHealth:
    failures: int = 0
    """Consecutive breaker failures."""
    opened: int = 0
    """Consecutive times the breaker opened: the cooldown multiplier. 0 when closed."""
    open_until: float = 0.0
    trial: bool = False
    """A half-open trial request is in flight."""
    cooling_until: float = 0.0
    rate_limits: int = 0
    exhausted_until: float = 0.0
    broken: bool = False
    inflight: int = 0
    ttft: float | None = None
    last_used: float = -float("inf")
    not_served: dict[str, float] = field(default_factory=dict)


def key_id(target: Target) -> str:
    return f"{target.provider.name}/{target.key.name}"


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
            self._keys.setdefault(key_id(target), KeyHealth())
            self._providers[key_id(target)] = target.provider.name
        self._drained: set[str] = set()

    # -- what routing sees --------------------------------------------------------------

    def view(self, target: Target, now: float | None = None) -> View:
        now = self._clock() if now is None else now
        key = self._keys[key_id(target)]
        status, ready_at = self._status(target, key, now)
        return View(status, ready_at, key.inflight, key.ttft)

    def _status(self, target: Target, key: KeyHealth, now: float) -> tuple[Status, float]:
        never = float("inf")
        if target.provider.name in self._drained:
            return Status.DRAINED, never
        if key.broken:
            return Status.BROKEN, never
        if key.exhausted_until > now:
            return Status.EXHAUSTED, key.exhausted_until
        if key.not_served.get(target.route.name, 0.0) > now:
            return Status.NOT_SERVED, key.not_served[target.route.name]
        if key.open_until > now:
            return Status.OPEN, key.open_until
        if key.opened:
            # Cooldown over: exactly one trial request at a time; while it runs, the key is
            # as good as open (routing may still fail open to it).
            return (Status.OPEN, key.open_until) if key.trial else (Status.HALF_OPEN, now)
        if key.cooling_until > now:
            return Status.COOLING, key.cooling_until
        return Status.CLOSED, now

    # -- what attempts report -------------------------------------------------------------

    def begin(self, target: Target) -> None:
        """An attempt is about to go to `target`; a half-open key takes it as its one trial."""
        key = self._keys[key_id(target)]
        now = self._clock()
        key.inflight += 1
        key.last_used = now
        if key.opened and key.open_until <= now:
            key.trial = True

    def end(self, target: Target) -> None:
        key = self._keys[key_id(target)]
        key.inflight = max(0, key.inflight - 1)

    def release(self, target: Target) -> None:
        """An attempt stopped without telling anything about the key (the client left)."""
        self._keys[key_id(target)].trial = False
        self.end(target)

    def succeeded(self, target: Target, *, ttft: float | None = None) -> None:
        key = self._keys[key_id(target)]
        key.failures = key.opened = key.rate_limits = 0
        key.open_until = 0.0
        key.trial = False
        if ttft is not None:
            key.ttft = ttft if key.ttft is None else EWMA_WEIGHT * ttft + (1 - EWMA_WEIGHT) * key.ttft

    def record(self, target: Target, error: UpstreamError) -> None:
        """An attempt at `target` failed: what that does to its key, by what the failure means."""
        verdict = getattr(error, "verdict", None)
        if verdict is None:  # no HTTP answer: connect error, reset, timeout, broken stream
            self.failed(target)
        else:
            _BY_VERDICT[Verdict(verdict)](self, target, error)

    def failed(self, target: Target) -> None:
        """A breaker failure: a connect error, reset, 5xx or timeout."""
        key = self._keys[key_id(target)]
        key.failures += 1
        if key.trial or key.failures >= self._breaker.failures:
            self._open(key)

    def _open(self, key: KeyHealth) -> None:
        key.opened += 1
        key.trial = False
        cooldown = min(self._breaker.cooldown * key.opened, self._breaker.max_cooldown)
        key.open_until = self._clock() + cooldown * (0.9 + 0.2 * self._jitter())

    def rate_limited(self, target: Target, retry_after: float | None) -> None:
        key = self._keys[key_id(target)]
        key.trial = False
        if retry_after is None:
            first, cap = RATE_LIMIT_BACKOFF
            retry_after = min(first * 2**key.rate_limits, cap) * (0.9 + 0.2 * self._jitter())
            key.rate_limits += 1
        key.cooling_until = max(key.cooling_until, self._clock() + retry_after)

    def exhausted(self, target: Target) -> None:
        key = self._keys[key_id(target)]
        key.trial = False
        key.exhausted_until = self._clock() + EXHAUSTED_COOLDOWN

    def rejected(self, target: Target) -> None:
        """Our key was refused (401/403): an ops problem, until reload or undrain."""
        key = self._keys[key_id(target)]
        key.trial = False
        key.broken = True

    def not_served(self, target: Target) -> None:
        key = self._keys[key_id(target)]
        key.trial = False
        key.not_served[target.route.name] = self._clock() + NOT_SERVED_FOR

    # -- operators ------------------------------------------------------------------------

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
            status, ready_at = self._status(target, key, now)
            if status is Status.NOT_SERVED:  # a per-model state; the key itself may be fine
                status, ready_at = Status.CLOSED, now
            rows[name] = {
                "provider": target.provider.name,
                "key": target.key.name,
                "status": str(status),
                "retry_in_seconds": round(ready_at - now, 3) if now < ready_at < float("inf") else None,
                "consecutive_failures": key.failures,
                "inflight": key.inflight,
                "ttft_ms": round(key.ttft * 1000, 3) if key.ttft is not None else None,
                "not_served": sorted(m for m, until in key.not_served.items() if until > now),
            }
        return list(rows.values())


_BY_VERDICT: dict[Verdict, Callable[[Health, Target, UpstreamError], None]] = {
    Verdict.CLIENT_FAULT: lambda health, target, error: None,  # the request's fault, not the key's
    Verdict.RATE_LIMITED: lambda health, target, error: health.rate_limited(
        target, getattr(error, "retry_after", None)
    ),
    Verdict.QUOTA_EXHAUSTED: lambda health, target, error: health.exhausted(target),
    Verdict.KEY_REJECTED: lambda health, target, error: health.rejected(target),
    Verdict.NOT_SERVED: lambda health, target, error: health.not_served(target),
    Verdict.SERVER_ERROR: lambda health, target, error: health.failed(target),
}
