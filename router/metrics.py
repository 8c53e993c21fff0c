"""Prometheus metrics (the only prometheus_client user). SPEC §7 names them and their labels.

Label values come only from configured names (clients, models, providers, keys) or from
small fixed sets (below; `endpoint` is an api.Endpoint's name: chat, embeddings, rerank,
responses, messages): an unknown model in a request never becomes a label value.

Under `serve --workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR (set by
`serve` to a directory of its own, emptied at start) and /metrics merges them; the gauges say
how (`multiprocess_mode`).
"""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)

from .errors import (
    UpstreamConnectError,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)

M = TypeVar("M", Counter, Histogram)


class Bound(Generic[M]):
    """A metric's children, each looked up once per set of label values.

    `metric.labels(...)` takes a lock and builds a tuple of str() calls every time (~2 µs);
    a dict hit is ~0.1 µs, and a request touches up to seven children. Label values are
    configured names and small fixed sets, so the cache stays as small as the metric.
    Counters and histograms only: gauges' children are removed on reload (forget_gauges).
    """

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: M):
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "router_requests_total",
    "API requests answered, by client, model, answering provider, endpoint and HTTP status.",
    ["client", "model", "provider", "endpoint", "code"],
    registry=REGISTRY,
)
DURATION = Histogram(
    "router_request_duration_seconds",
    "Whole request time, a stream included.",
    ["model", "provider", "endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
TTFT = Histogram(
    "router_time_to_first_token_seconds",
    "Streams: request sent upstream to the first chunk carrying answer content.",
    ["model", "provider", "endpoint"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
OVERHEAD = Histogram(
    "router_overhead_seconds",
    "The router's own time on a request until its answer starts: total minus waiting on providers.",
    buckets=(0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
    registry=REGISTRY,
)
ATTEMPTS = Counter(
    "router_upstream_attempts_total",
    "Requests sent to providers, by how each ended.",
    ["provider", "outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "router_tokens_total",
    "Tokens settled, by client, model, provider, endpoint and type (prompt or completion).",
    ["client", "model", "provider", "endpoint", "type"],
    registry=REGISTRY,
)
COST = Counter(
    "router_cost_total",
    "Cost settled, in the account's currency (providers.yaml price per million tokens).",
    ["client", "model", "provider"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "router_rate_limited_total",
    "Requests refused or keys skipped at a configured limit.",
    ["scope", "name", "limit"],
    registry=REGISTRY,
)
PROVIDER_UP = Gauge(
    "router_provider_up",
    "1 while a provider key is usable; 0 while its breaker is open, it is refused, out of quota or drained.",
    ["provider", "key"],
    multiprocess_mode="livemax",
    registry=REGISTRY,
)
INFLIGHT = Gauge(
    "router_inflight_requests",
    "Requests in flight at each provider.",
    ["provider"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
STREAM_OUTCOMES = Counter(
    "router_stream_outcomes_total",
    "How relayed streams ended: completed, error or client_disconnected.",
    ["outcome"],
    registry=REGISTRY,
)
HEDGES_STARTED = Counter(
    "router_hedges_started_total",
    "Second attempts started because the first had no first token after routing.hedge.after.",
    ["model"],
    registry=REGISTRY,
)
HEDGES_WON = Counter(
    "router_hedges_won_total",
    "Hedges that answered first; the attempt they raced was cancelled.",
    ["model"],
    registry=REGISTRY,
)
STREAM_EVENTS_DROPPED = Counter(
    "router_stream_events_dropped_total",
    "Malformed stream events from a provider, dropped rather than relayed.",
    ["provider"],
    registry=REGISTRY,
)
REPLAYS = Counter(
    "router_idempotent_replays_total",
    "Requests answered from a stored idempotent answer, with no upstream call.",
    registry=REGISTRY,
)
STATE_ERRORS = Counter(
    "router_state_errors_total",
    "Shared-state operations that failed (Redis unreachable or too slow), by operation.",
    ["op"],
    registry=REGISTRY,
)
BUDGET_REMAINING = Gauge(
    "router_budget_remaining",
    "The fraction (0..1) of each client's budget left this period.",
    ["client"],
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
QUOTA_REMAINING = Gauge(
    "router_quota_remaining",
    "The fraction (0..1) of a provider's key quota left this period (its lowest key).",
    ["provider"],
    multiprocess_mode="livemin",
    registry=REGISTRY,
)
RELOADS = Counter(
    "router_config_reloads_total",
    "Configuration reloads (SIGHUP or a changed file), by result: ok, or error (the old one kept).",
    ["result"],
    registry=REGISTRY,
)
CONNECTIONS_OPEN = Gauge(
    "router_connections_open",
    "Client connections open (the metrics listener's included).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
CONNECTIONS_CLOSED = Counter(
    "router_connections_closed_total",
    "Client connections router ended at an edge limit (router/edge.py), by reason.",
    ["reason"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "router_state_outbox_depth",
    "Settlements waiting for the shared store (in the journal when one is configured).",
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
SETTLEMENTS_DROPPED = Counter(
    "router_settlements_dropped_total",
    "Settlements lost because the outbox journal was full or could not be written.",
    registry=REGISTRY,
)
SETTLEMENTS_RECOVERED = Counter(
    "router_settlements_recovered_total",
    "Requests of a replica that died, settled by this one from their intents (outcome replica_lost).",
    registry=REGISTRY,
)
LEDGER_EXPORT_LAG = Gauge(
    "router_ledger_export_lag_seconds",
    "Age of the oldest settlement record not yet written to every ledger sink (0: none waiting).",
    multiprocess_mode="max",
    registry=REGISTRY,
)
LEDGER_EXPORTED = Counter(
    "router_ledger_records_exported_total",
    "Settlement records durably written by `router ledger export`, by sink.",
    ["sink"],
    registry=REGISTRY,
)
LEDGER_EXPORT_FAILURES = Counter(
    "router_ledger_export_failures_total",
    "Export batches a sink failed to write (retried), by sink.",
    ["sink"],
    registry=REGISTRY,
)
REDIS_MEMORY_USED = Gauge(
    "router_state_redis_memory_used_bytes",
    "Redis used_memory, as the ledger exporter last read it (INFO memory; summed over a cluster's masters).",
    multiprocess_mode="max",
    registry=REGISTRY,
)
REDIS_MEMORY_MAX = Gauge(
    "router_state_redis_memory_max_bytes",
    "Redis maxmemory (0: no limit), as the ledger exporter last read it.",
    multiprocess_mode="max",
    registry=REGISTRY,
)
CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "header_too_large",
    "too_many_headers",
    "max_connections",
    "bad_request",
)

# The hot path's children, pre-bound.
requests = Bound(REQUESTS)
duration = Bound(DURATION)
ttft = Bound(TTFT)
attempts = Bound(ATTEMPTS)
tokens = Bound(TOKENS)
cost = Bound(COST)
stream_outcomes = Bound(STREAM_OUTCOMES)
stream_events_dropped = Bound(STREAM_EVENTS_DROPPED)
hedges_started = Bound(HEDGES_STARTED)
hedges_won = Bound(HEDGES_WON)
connections_closed = Bound(CONNECTIONS_CLOSED)

NAMES = (
    "router_requests_total",
    "router_request_duration_seconds",
    "router_time_to_first_token_seconds",
    "router_overhead_seconds",
    "router_upstream_attempts_total",
    "router_tokens_total",
    "router_cost_total",
    "router_rate_limited_total",
    "router_provider_up",
    "router_inflight_requests",
    "router_stream_outcomes_total",
    "router_stream_events_dropped_total",
    "router_hedges_started_total",
    "router_hedges_won_total",
    "router_idempotent_replays_total",
    "router_state_errors_total",
    "router_budget_remaining",
    "router_quota_remaining",
    "router_config_reloads_total",
    "router_connections_open",
    "router_connections_closed_total",
    "router_state_outbox_depth",
    "router_settlements_dropped_total",
    "router_settlements_recovered_total",
    "router_ledger_export_lag_seconds",
    "router_ledger_records_exported_total",
    "router_ledger_export_failures_total",
    "router_state_redis_memory_used_bytes",
    "router_state_redis_memory_max_bytes",
)
"""Every metric router exports, as scraped (counters with `_total`)."""

for _op in ("acquire", "settle", "renew", "flush", "ping", "usage", "recover"):
    STATE_ERRORS.labels(_op)  # present at zero, so rate() and alerts see the series from the start
for _result in ("ok", "error"):
    RELOADS.labels(_result)
for _outcome in ("completed", "error", "client_disconnected"):
    STREAM_OUTCOMES.labels(_outcome)
for _reason in CLOSE_REASONS:
    CONNECTIONS_CLOSED.labels(_reason)


def attempt_outcome(error: UpstreamError | None) -> str:
    """A bounded name for how an attempt ended."""
    if error is None:
        return "ok"
    if isinstance(error, UpstreamStatusError):
        verdict = str(error.verdict)
        return "client_error" if verdict == "client_fault" else verdict
    for kind, name in _KINDS:
        if isinstance(error, kind):
            return name
    return "server_error"


_KINDS: tuple[tuple[type[UpstreamError], str], ...] = (
    (UpstreamTimeout, "timeout"),
    (UpstreamConnectError, "connect_error"),
    (UpstreamConnectionLost, "connection_lost"),
    (UpstreamProtocolError, "protocol_error"),
)


def state_error(op: str) -> None:
    STATE_ERRORS.labels(op).inc()


def process_exiting() -> None:
    """A worker that stops: its live gauges leave the merged view (a restarted worker's would
    otherwise stay forever)."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget_gauges() -> None:
    """After a reload: the new runtime sets afresh what is still configured."""
    for gauge in (PROVIDER_UP, INFLIGHT, BUDGET_REMAINING, QUOTA_REMAINING):
        gauge.clear()


def serve(port: int, host: str = "0.0.0.0") -> None:
    """Expose this process's metrics on their own port (the ledger exporter, which has no app)."""
    start_http_server(port, addr=host, registry=REGISTRY)


def exposition() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
