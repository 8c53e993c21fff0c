"""Pure: which targets to try for a request, in order.

`plan()` is the seam where strategies (weighted, latency, least busy), stickiness and
health plug in; today it orders by priority tier, then config order.
"""

from __future__ import annotations

from .config import Target


def plan(targets: tuple[Target, ...], *, max_attempts: int) -> tuple[Target, ...]:
    """The targets to try, best first, at most `max_attempts` of them.

    Lower `priority` first (the next tier is only for when a tier is unusable); within a
    tier, config order. `sorted` is stable, so config order survives.
    """
    ordered = sorted(targets, key=lambda t: t.provider.priority)
    return tuple(ordered[:max_attempts])
