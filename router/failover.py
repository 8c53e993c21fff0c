"""The retry policy: when to try again, how long to wait first, and what the client gets
when every attempt failed.

- Backoff between attempts is jittered and never zero: no two attempts in a tight loop.
- A retry budget caps amplification: over a sliding window, retries may be at most a share
  of requests plus a small floor. When everything is failing, clients get errors quickly
  instead of every request turning into max_attempts requests upstream.
- The final error follows SPEC §8: 429 with the soonest Retry-After if every failure was a
  rate limit; 504 if the deadline passed or the last failure was a timeout; 503 if no
  target could be tried at all; otherwise the last provider's error (502).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import (
    NoProviderAvailable,
    ParamNotAllowed,
    RouterError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .health import Status

_WHY: dict[str, str] = {
    Status.DRAINED: "is drained",
    Status.BROKEN: "refused our key",
    Status.EXHAUSTED: "is out of quota",
    Status.NOT_SERVED: "has no channel for this model",
    Status.OPEN: "is failing",
    Status.COOLING: "is rate limited",
    "at_limit": "is at its configured limit",
}

BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
BUDGET_RATIO = 0.2
BUDGET_FLOOR = 10
BUDGET_WINDOW = 10.0


def backoff(retry: int, rng: random.Random) -> float:
    """Seconds before retry number `retry` (1 for the first): doubling, capped, half of it jittered."""
    step = min(BACKOFF_BASE * 2.0 ** (retry - 1), BACKOFF_CAP)
    return step / 2 + rng.random() * step / 2


class RetryBudget:
    """Retries allowed over the last BUDGET_WINDOW seconds: a share of requests plus a floor.

    Counted in one-second buckets, so the window slides without keeping every timestamp.
    """

    def __init__(
        self,
        *,
        ratio: float = BUDGET_RATIO,
        floor: int = BUDGET_FLOOR,
        window: float = BUDGET_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._ratio, self._floor, self._clock = ratio, floor, clock
        self._slots = max(1, math.ceil(window))
        self._requests = [0] * self._slots
        self._retries = [0] * self._slots
        self._second = math.floor(clock())

    def request(self) -> None:
        self._requests[self._slot()] += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget has one; False when it is spent."""
        slot = self._slot()
        if sum(self._retries) >= self._ratio * sum(self._requests) + self._floor:
            return False
        self._retries[slot] += 1
        return True

    def _slot(self) -> int:
        second = math.floor(self._clock())
        if second != self._second:
            # Clear the buckets of the seconds that passed since the last call.
            for past in range(self._second + 1, min(second, self._second + self._slots) + 1):
                self._requests[past % self._slots] = self._retries[past % self._slots] = 0
            self._second = second
        return second % self._slots


@dataclass
class Failures:
    """The failed attempts of one request, and why others were not made."""

    model: str
    errors: list[UpstreamError] = field(default_factory=list)
    refusal: ParamNotAllowed | None = None
    """A target that could not take the request's values (a 400 if no other could)."""
    waiting: float | None = None
    """The soonest a cooling target would be ready, when that was past the deadline."""
    deadline_passed: bool = False
    states: dict[str, str] = field(default_factory=dict)
    """Why each target was not usable: a health Status, or "at_limit" (its configured limit)."""
    """Each target key's state when routing gave up, to say why in a 503."""

    def add(self, error: UpstreamError) -> None:
        self.errors.append(error)

    def final(self) -> RouterError:
        if not self.errors:
            if self.refusal is not None:
                return self.refusal
            if self.waiting is not None:
                return _rate_limited(self.model, self.waiting)
            why = "; ".join(f"{name} {_WHY.get(state, state)}" for name, state in sorted(self.states.items()))
            return NoProviderAvailable(
                f"No provider can serve '{self.model}' now: {why or 'none is configured'}."
            )
        last = self.errors[-1]
        limited = [e for e in self.errors if isinstance(e, UpstreamStatusError) and e.http_status == 429]
        if len(limited) == len(self.errors):
            waits = [e.retry_after for e in limited if e.retry_after is not None]
            if self.waiting is not None:
                waits.append(self.waiting)
            if waits:
                return _rate_limited(self.model, min(waits), provider=last.provider)
            return last
        if self.deadline_passed and not isinstance(last, UpstreamTimeout):
            return UpstreamTimeout(
                f"The request deadline passed after {len(self.errors)} attempt(s); last: {last.message}",
                provider=last.provider,
            )
        return last


def _rate_limited(model: str, wait: float, *, provider: str | None = None) -> UpstreamStatusError:
    seconds = max(1, math.ceil(wait))
    return UpstreamStatusError(
        f"Every provider for '{model}' is rate limited; retry after {seconds}s.",
        provider=provider or "",
        client_status=429,
        client_code="rate_limit_exceeded",
        retryable=False,
        verdict="rate_limited",
        retry_after=wait,
        headers={"Retry-After": str(seconds)},
    )
