"""The settlement record (SPEC §6): one JSON object per provider call, written once.

Its fields come in two parts, made at two times: what is known when the request is admitted
(`head`: who asked, for which model, sent where), and what only its end knows (`finish`: the
tokens, the cost, how it ended). Settlement joins both when the request ends; the intent a
request leaves in shared state carries the head, so a surviving replica can finish the record
of a request whose replica died (recovery.py).
"""

from __future__ import annotations

from typing import Any

import orjson

from . import logs
from .call import Call
from .config import Target
from .types import Usage


def head(call: Call, settlement_key: str, target: Target) -> dict[str, Any]:
    """The record's fields known before the provider answers."""
    return {
        "settlement_key": settlement_key,
        "request_id": call.request_id,
        "idempotency_key": call.idempotency,
        "client": call.client_name,
        "provider": target.provider.name,
        "key": target.key.name,
        "model": call.model,
        "upstream_model": target.route.upstream,
        "endpoint": call.endpoint.name,
    }


def finish(
    fields: dict[str, Any],
    used: Usage,
    cost_nanos: int,
    *,
    estimated: bool,
    status: int,
    outcome: str,
    started_at: float,
    duration_ms: float,
    hedge_of: str | None = None,
) -> bytes:
    """The whole record, as stored: `fields` (a head) completed by how the request ended."""
    record = {
        **fields,
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "cached_tokens": used.cached_tokens,
        "reasoning_tokens": used.reasoning_tokens,
        "cost": cost_nanos / 1e9,
        "usage_source": "estimated" if estimated else "provider",
        "status": status,
        "outcome": outcome,
        "started_at": logs.utc_iso(started_at),
        "duration_ms": round(duration_ms, 3),
    }
    if hedge_of is not None:
        record["hedge_of"] = hedge_of
    return compact(orjson.dumps(record))


def compact(data: bytes) -> bytes:
    """`data` in an allocation of its own size: orjson hands back bytes that keep a 4 KiB
    allocation behind a ~500-byte record, and records are kept (the memory ledger, the
    outbox), so each would otherwise hold ~8 KiB (tracemalloc; test_state.py checks it)."""
    return bytes(memoryview(data))
