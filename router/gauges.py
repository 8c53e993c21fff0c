"""Gauges sampled in each process: provider keys up, requests in flight, settlements waiting
in the outbox, budgets and quotas left.

They are states, not events, and a breaker's state changes with time alone (open -> half-open),
so they are read from health and shared state on a timer rather than set where things happen.
"""

from __future__ import annotations

import asyncio
import logging

from . import metrics
from .health import Status
from .runtime import Runtime
from .state import StateUnavailableError

log = logging.getLogger("router.gauges")

EVERY = 1.0
"""Seconds between samples of health (cheap, in memory)."""
USAGE_EVERY = 15.0
"""Seconds between reads of budgets and quotas (a few store reads per client and key)."""
_DOWN = (Status.OPEN, Status.HALF_OPEN, Status.BROKEN, Status.EXHAUSTED, Status.DRAINED)
"""Half-open is a failing key's one trial, not a key known good: still down to an alert."""


def sample_health(rt: Runtime) -> None:
    inflight: dict[str, int] = {name: 0 for name in rt.config.providers}
    for target in rt.targets:
        view = rt.health.view(target)
        up = 0 if view.status in _DOWN else 1
        metrics.PROVIDER_UP.labels(target.provider.name, target.key.name).set(up)
        inflight[target.provider.name] += view.inflight
    for provider, count in inflight.items():
        metrics.INFLIGHT.labels(provider).set(count)
    metrics.OUTBOX_DEPTH.set(len(rt.ledger.state.outbox))


async def sample_usage(rt: Runtime) -> None:
    if not any(c.budget for c in rt.config.clients) and not any(
        p.quota for p in rt.config.providers.values()
    ):
        return
    report = await rt.ledger.usage()
    for name, row in report["clients"].items():
        if "limit" in row:
            metrics.BUDGET_REMAINING.labels(name).set(_fraction(row["limit"]))
    for provider, keys in report["providers"].items():
        fractions = [_fraction(row["limit"]) for row in keys.values() if "limit" in row]
        if fractions:
            metrics.QUOTA_REMAINING.labels(provider).set(min(fractions))


def _fraction(limit: dict[str, float]) -> float:
    total = limit.get("tokens", limit.get("cost")) or 0
    return max(0.0, min(1.0, limit["remaining"] / total)) if total else 0.0


async def run(rt: Runtime) -> None:
    waited = USAGE_EVERY
    while True:
        sample_health(rt)
        if waited >= USAGE_EVERY:
            waited = 0.0
            try:
                await sample_usage(rt)
            except StateUnavailableError:
                pass  # Redis is down: the last values stand, and state errors say why
            except Exception:  # a gauge is never worth the process
                log.exception("gauges: reading usage failed")
        await asyncio.sleep(EVERY)
        waited += EVERY
