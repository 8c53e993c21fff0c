"""Pure: GCRA, the rate-limit arithmetic shared by the memory store and the Lua scripts.

SPEC §8: burst equal to the limit. A window of `limit` per PERIOD is a bucket of PERIOD
seconds that each unit of cost fills by PERIOD / limit; `tat` (theoretical arrival time) is
when the bucket is empty again. A request fits if, with its cost added, the bucket does not
overflow. A fresh client may use all N at once, then refills at N per minute.
redis/acquire.lua does the same in milliseconds; keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass

PERIOD = 60.0
EPSILON = 1e-6
"""A microsecond: above a float's resolution at epoch scale, so a burst of exactly N fits."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    tat: float
    """The new theoretical arrival time if allowed (else the old one, unchanged)."""
    remaining: int
    reset: float
    """Seconds until the window is whole again."""
    retry_after: float
    """Seconds until this cost would fit (0 when allowed)."""


def check(tat: float | None, now: float, *, limit: int, cost: int) -> Decision:
    interval = PERIOD / limit
    start = max(tat or now, now)
    new_tat = start + cost * interval
    if new_tat - now <= PERIOD + EPSILON:
        return Decision(True, new_tat, _remaining(new_tat, now, interval), new_tat - now, 0.0)
    return Decision(False, start, _remaining(start, now, interval), start - now, new_tat - now - PERIOD)


def reconcile(tat: float | None, now: float, *, limit: int, delta: int) -> float | None:
    """Move the window by `delta` units once the real cost is known. A refund gives back at
    most what is still in the bucket (a reservation that already drained out cannot be
    credited twice); more cost is added from now."""
    if tat is None:
        return None
    return max(max(tat, now) + delta * (PERIOD / limit), now)


def _remaining(tat: float, now: float, interval: float) -> int:
    return max(0, int((PERIOD - (tat - now) + EPSILON) / interval))
