"""Prometheus metrics (the only prometheus_client user). SPEC §7 names the metrics.

Only what shared state reports so far; the rest of SPEC §7 builds on this module.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

STATE_ERRORS = Counter(
    "router_state_errors_total",
    "Shared-state operations that failed (Redis unreachable or too slow), by operation.",
    ["op"],
    registry=REGISTRY,
)
for _op in ("acquire", "settle", "renew", "flush", "ping", "usage"):
    STATE_ERRORS.labels(_op)  # present at zero, so rate() and alerts see the series from the start


def state_error(op: str) -> None:
    STATE_ERRORS.labels(op).inc()


def exposition() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
