"""Pure: which targets to try for a request, in what order, and from when.

    plan(targets, views, ...) -> [Candidate(target, not_before), ...]

Usable targets (breaker closed, or half-open with its trial free) come first: the best
priority tier ordered by the strategy, a conversation's sticky target at its head, then
the next tiers. Targets this request already tried go last. When nothing is usable,
routing fails open: a target whose breaker is open is tried anyway, the one whose cooldown
ends first first; one that a provider rate limited is offered from the time its
Retry-After names, and the caller decides whether that wait fits its deadline.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from .config import Target
from .health import Status, View

LATENCY_EXPLORATION = 0.1
"""Share of requests the latency strategy sends to a random target, so a recovered one is noticed."""
_WAITABLE = (Status.OPEN, Status.COOLING)


@dataclass(frozen=True, slots=True)
class Candidate:
    target: Target
    not_before: float
    """Loop time before which the target should not be sent to (its cooldown's end)."""
    fail_open: bool = False
    """Offered although unusable, because nothing usable was left."""


class Strategy(Protocol):
    """Orders the usable targets of one priority tier, best first."""

    def order(
        self, tier: Sequence[Target], views: Mapping[Target, View], rng: random.Random
    ) -> list[Target]: ...


class Weighted:
    """Weighted random, without replacement (Efraimidis-Spirakis keys): the first pick is
    proportional to weight, and so is each next among the rest."""

    def order(self, tier: Sequence[Target], views: Mapping[Target, View], rng: random.Random) -> list[Target]:
        return sorted(tier, key=lambda t: _weighted_key(t, rng), reverse=True)


class Ordered:
    """Config order (tiers already give priority order)."""

    def order(self, tier: Sequence[Target], views: Mapping[Target, View], rng: random.Random) -> list[Target]:
        return list(tier)


class Latency:
    """Lowest recent time to first token first; unmeasured targets first so they get measured,
    and now and then a random order so a target that recovered is noticed."""

    def order(self, tier: Sequence[Target], views: Mapping[Target, View], rng: random.Random) -> list[Target]:
        if rng.random() < LATENCY_EXPLORATION:
            return Weighted().order(tier, views, rng)
        return sorted(tier, key=lambda t: (views[t].latency or 0.0, -_weighted_key(t, rng)))


class LeastBusy:
    """Fewest requests in flight first; ties broken by weight."""

    def order(self, tier: Sequence[Target], views: Mapping[Target, View], rng: random.Random) -> list[Target]:
        return sorted(tier, key=lambda t: (views[t].inflight, -_weighted_key(t, rng)))


STRATEGIES: Mapping[str, Strategy] = {
    "weighted": Weighted(),
    "ordered": Ordered(),
    "latency": Latency(),
    "least_busy": LeastBusy(),
}


def plan(
    targets: Sequence[Target],
    views: Mapping[Target, View],
    *,
    now: float,
    strategy: Strategy,
    rng: random.Random,
    conversation: str | None = None,
    tried: Collection[Target] = (),
) -> list[Candidate]:
    usable = [t for t in targets if views[t].usable]
    if not usable:
        return _fail_open(targets, views, now)
    ordered: list[Target] = []
    for priority in sorted({t.provider.priority for t in usable}):
        tier = strategy.order([t for t in usable if t.provider.priority == priority], views, rng)
        if conversation is not None and not ordered:
            sticky = rendezvous(conversation, tier)
            tier = [sticky, *(t for t in tier if t is not sticky)]
        ordered += tier
    fresh = [t for t in ordered if t not in tried]
    again = [t for t in ordered if t in tried]
    return [Candidate(t, now) for t in fresh + again]


def _fail_open(targets: Sequence[Target], views: Mapping[Target, View], now: float) -> list[Candidate]:
    """Nothing is usable. An open breaker is tried anyway, now, soonest cooldown first: better
    one more attempt than refusing the request. A provider's own Retry-After is honoured:
    that target is offered from the time it names. Drained, refused, exhausted: never."""
    waiting = sorted((t for t in targets if views[t].status in _WAITABLE), key=lambda t: views[t].ready_at)
    return [
        Candidate(t, now if views[t].status is Status.OPEN else views[t].ready_at, fail_open=True)
        for t in waiting
    ]


def rendezvous(conversation: str, targets: Sequence[Target]) -> Target:
    """The target a conversation sticks to: highest weighted rendezvous score.

    Each (conversation, target) pair has a fixed score, so losing one target moves only
    the conversations it held; the others keep theirs.
    """
    return max(targets, key=lambda t: _rendezvous_score(conversation, t))


def _rendezvous_score(conversation: str, target: Target) -> float:
    digest = hashlib.blake2b(f"{conversation}\0{target.name}".encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 0.5) / 2**64  # in (0, 1)
    return -target.provider.weight / math.log(unit)


def _weighted_key(target: Target, rng: random.Random) -> float:
    weight = target.provider.weight
    return rng.random() ** (1.0 / weight) if weight > 0 else -1.0
