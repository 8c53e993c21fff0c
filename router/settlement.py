"""What a finished request gives back and records, exactly once (SPEC §6).

Whichever path ends the request (a whole answer, an error, a stream's end, the client
leaving, a cancellation) settles it, once, in one round trip: one store step per scope that
releases the leases, reconciles TPM with the real usage, adds the usage to the counters and
appends the record to the client's ledger. A request that did no upstream work settles
nothing and lets its idempotency key go.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import limits, metrics, records
from .config import Target
from .state import Settle, Stored
from .steps import Step, client_step, counted_as, key_release, key_step
from .types import Usage

if TYPE_CHECKING:
    from .admission import Admission
    from .call import Call
    from .ledger import Ledger


@dataclass(frozen=True, slots=True)
class Settled:
    """What the settlement recorded, for the request's log line; and the store work to run."""

    used: Usage | None
    """The tokens settled; None when nothing was (no upstream work)."""
    settlement_key: str | None
    work: Coroutine[Any, Any, None] | None


class Settlement:
    """Settles one admitted request when it ends, once."""

    def __init__(self, ledger: Ledger, admission: Admission, *, request_id: str, started: float):
        self._ledger = ledger
        self._admission = admission
        self._request_id = request_id
        self._started = started
        """time.perf_counter() when the request arrived."""
        self.closed = False
        self._hedges = 0

    def stored(self, status: int, *, stream: bool, body: bytes) -> Stored | None:
        """The answer as kept for a retry with the same idempotency key; None without a key."""
        if self._admission.call.idempotency is None:
            return None
        return Stored(self._admission.settlement_key, status, stream, body)

    def close(
        self,
        *,
        target: Target | None,
        status: int,
        outcome: str,
        usage: Usage | None,
        estimated: Usage | None = None,
        stored: Stored | None = None,
    ) -> Settled:
        """Settle the request: `target` is the one that did its upstream work (None if none
        did). `usage` is the provider's, else `estimated` is recorded as router's estimate."""
        admission = self._admission
        if self.closed or admission.refused:
            return Settled(None, None, None)
        self.closed = True
        key = admission.settlement_key
        self._ledger.forget(key)
        keys = admission.keys
        releases = [key_release(key, *keys.pop(t)) for t in list(keys) if t is not target]
        if target is None:  # no upstream work: nothing is settled, the idempotency key goes free
            steps = [*client_step(admission.held, None, None, None), *releases]
            return Settled(None, None, self._run(steps))
        call = admission.call
        used = usage or estimated or Usage(0, 0)
        cost = limits.cost_nanos(used, target.route.price)
        _counted(call, target, used, cost)
        record = self._record(key, target, used, cost, usage is None, status, outcome)
        periods = limits.periods(admission.started_at)
        steps = [
            *client_step(admission.held, used, cost, record, stored, periods, call.endpoint.name),
            *releases,
        ]
        held = keys.pop(target, None)
        if held is not None or used.total_tokens or cost:  # the key's quota and usage counters
            steps.append(key_step(key, target, held, used, cost, periods))
        return Settled(used, key, self._run(steps))

    def hedge_lost(self, target: Target, used: Usage) -> Settled:
        """An attempt that a hedge race cancelled: a record of its own (`hedge_of` the
        request's), its estimated usage added to the client's and the key's counters, and
        its key's reservation given back."""
        admission = self._admission
        call = admission.call
        self._hedges += 1
        key = f"{admission.settlement_key}.hedge{self._hedges}"
        cost = limits.cost_nanos(used, target.route.price)
        _counted(call, target, used, cost)
        record = self._record(key, target, used, cost, True, 499, "hedge_lost")
        periods = limits.periods(admission.started_at)
        scope = limits.client_scope(call.client_name)
        steps: list[Step] = [
            (
                Settle(
                    scope=scope, settlement_key=key, tokens=used.total_tokens, cost_nanos=cost,
                    periods=periods, record=record, endpoint=counted_as(call.endpoint.name),
                ),
                admission.granted.local if admission.granted else False,
            )
        ]  # fmt: skip
        steps.append(key_step(key, target, admission.keys.pop(target, None), used, cost, periods))
        return Settled(used, key, self._run(steps))

    def _record(
        self, key: str, target: Target, used: Usage, cost: int, estimated: bool, status: int, outcome: str
    ) -> bytes:
        admission = self._admission
        return records.finish(
            records.head(admission.call, key, target),
            used,
            cost,
            estimated=estimated,
            status=status,
            outcome=outcome,
            started_at=admission.started_at,
            duration_ms=(time.perf_counter() - self._started) * 1000,
            hedge_of=admission.settlement_key if key != admission.settlement_key else None,
        )

    def _run(self, steps: list[Step]) -> Coroutine[Any, Any, None] | None:
        return self._ledger.state.settle_all(steps) if steps else None


def _counted(call: Call, target: Target, used: Usage, cost: int) -> None:
    labels = (call.client_name or "", call.model, target.provider.name)
    endpoint = call.endpoint.name
    metrics.tokens(*labels, endpoint, "prompt").inc(used.prompt_tokens)
    metrics.tokens(*labels, endpoint, "completion").inc(used.completion_tokens)
    if cost:
        metrics.cost(*labels).inc(cost / 1e9)
