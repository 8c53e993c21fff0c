"""Settling the requests of a replica that died (SPEC §6: every provider call, exactly once).

Admission leaves an intent beside the request's lease in its client's scope: the record's
head and the estimate. The replica renews it while the request runs and its settlement
removes it. When a replica dies with requests in flight, their intents stop being renewed;
once one's lease has run out (plus a grace for a replica that was only cut off from the
store), any surviving replica settles it here: a record with `outcome: replica_lost` and
`usage_source: estimated` — the prompt's estimate, and the completion tokens relayed so far
when a renewal reported them, else the completion's estimate — whose usage counts against the
client's and the key's counters like any other. It is settled under the request's own
settlement key, so two replicas recovering it at once, or the dead one's settlement landing
late, still make one record. The idempotency claim it held goes with it.
"""

from __future__ import annotations

import logging
import time

import orjson

from . import limits, metrics, records
from .config import Config, Price, Target
from .state import GuardedStore, Intent, Settle
from .steps import Step, counted_as, key_step
from .types import Usage

log = logging.getLogger("router.recovery")

AT_MOST = 100
"""Intents recovered per scope per sweep: a long backlog drains over several sweeps."""
STATUS = 502
"""The status a lost request's client saw, as far as a record can say: no answer, the
connection cut by the replica's death."""


async def sweep(config: Config, state: GuardedStore) -> int:
    """Settle every intent in the clients' scopes whose replica is gone. Returns how many."""
    grace = config.state.lease_ttl / 3  # one renewal: a replica back from an outage renews first
    recovered = 0
    for scope in limits.client_scopes(config.clients):
        intents = await state.recover(scope, grace=grace, limit=AT_MOST)
        if not intents:
            continue
        steps: list[Step] = []
        settled = 0
        for intent in intents:
            try:
                steps += settle_steps(config, scope, intent)
                settled += 1
            except (ValueError, KeyError, TypeError) as error:  # never seen: say so, keep sweeping
                log.error("recovery: intent %s unreadable (%s); left in place", intent.settlement_key, error)
        await state.settle_all(steps)
        if settled:
            recovered += settled
            metrics.SETTLEMENTS_RECOVERED.inc(settled)
            log.warning("recovery: settled %d request(s) of a replica that died (%s)", settled, scope)
    return recovered


def settle_steps(config: Config, scope: str, intent: Intent, *, now: float | None = None) -> list[Step]:
    """The store steps that settle a lost request from its intent: its client's (the record,
    the usage, its claim let go, the intent ended) and, if its key is still configured, the key's."""
    body = orjson.loads(intent.body)
    head = body["head"]
    started_at = float(body["started_at"])
    completion = intent.relayed if intent.relayed >= 0 else int(body["completion_tokens"])
    used = Usage(int(body["prompt_tokens"]), completion)
    target = _target(config, head["model"], head["provider"], head["key"])
    # The price it was admitted at, if its route has gone from the config since.
    price = target.route.price if target else _price(body.get("price"))
    cost = limits.cost_nanos(used, price)
    ended = time.time() if now is None else now
    record = records.finish(
        head,
        used,
        cost,
        estimated=True,
        status=STATUS,
        outcome="replica_lost",
        started_at=started_at,
        duration_ms=max(0.0, ended - started_at) * 1000,
    )
    periods = limits.periods(started_at)
    claim = head.get("idempotency_key")
    client = Settle(
        scope=scope,
        settlement_key=intent.settlement_key,
        tokens=used.total_tokens,
        cost_nanos=cost,
        periods=periods,
        record=record,
        claim_key=claim,
        intent=True,
        endpoint=counted_as(head.get("endpoint")),  # None: chat's, or an older release's
    )
    steps: list[Step] = [(client, False)]
    if target is not None:
        steps.append(key_step(intent.settlement_key, target, None, used, cost, periods))
    return steps


def _price(raw: object) -> Price | None:
    if not isinstance(raw, list) or len(raw) != 3:
        return None
    given, cached, output = raw
    return Price(float(given), float(output), None if cached is None else float(cached))


def _target(config: Config, model: str, provider: str, key: str) -> Target | None:
    for target in config.targets.get(model, ()):
        if target.provider.name == provider and target.key.name == key:
            return target
    return None
