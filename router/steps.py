"""The store steps that end a request's hold on shared state: what its client's scope and each
provider key it reserved get back, and the usage and record they are given (settlement.py,
and admission.py for what a request that never went out gives back)."""

from __future__ import annotations

from dataclasses import dataclass

from . import limits
from .config import Target
from .state import Ask, Granted, Settle, Stored
from .types import Usage

Step = tuple[Settle, bool]
"""One store step, and whether it goes to the local fallback (what it settles was granted there)."""


@dataclass(frozen=True, slots=True)
class ClientHold:
    """What a request holds in its client's scope: what it asked, and what was granted."""

    settlement_key: str
    client: str | None
    ask: Ask | None
    granted: Granted | None


UNCOUNTED = "chat"
"""The endpoint whose usage the store does not count apart: chat carries most traffic, so its
usage by endpoint is the client's total less the others' (ledger.usage), which spares every
chat settlement two HINCRBY per period."""


def counted_as(endpoint: str | None) -> str | None:
    """The name a settlement's usage is counted apart under, by endpoint (None: not apart)."""
    return None if endpoint == UNCOUNTED else endpoint


def client_step(
    held: ClientHold,
    used: Usage | None,
    cost: int | None,
    record: bytes | None,
    stored: Stored | None = None,
    periods: tuple[str, ...] = (),
    endpoint: str | None = None,
) -> list[Step]:
    """The client scope's step: its lease and claim released, its usage and record added (also
    under `endpoint`, the API it came in by, for /admin/usage)."""
    ask, granted = held.ask, held.granted
    if record is None and granted is None:
        return []  # nothing was taken, nothing to give back
    tokens = used.total_tokens if used else 0
    settle = Settle(
        scope=ask.scope if ask else limits.client_scope(held.client),
        settlement_key=held.settlement_key,
        hold=granted.hold if granted else None,
        tpm=ask.tpm if ask else 0,
        tpm_delta=tokens - (granted.tokens if granted else 0),
        tokens=tokens,
        cost_nanos=cost or 0,
        periods=periods if record is not None else (),
        record=record,
        claim_key=ask.claim.key if ask and ask.claim else None,
        claim_hash=ask.claim.body_hash if ask and ask.claim else "",
        stored=stored,
        intent=ask is not None and ask.intent is not None,
        endpoint=counted_as(endpoint),
    )
    return [(settle, granted.local if granted else False)]


def key_step(
    settlement_key: str,
    target: Target,
    held: tuple[Ask, Granted] | None,
    used: Usage,
    cost: int,
    periods: tuple[str, ...],
) -> Step:
    """The provider key's step: its reservation (`held`) reconciled, its usage and quota added."""
    ask, granted = held if held is not None else (None, None)
    settle = Settle(
        scope=limits.key_scope(target),
        settlement_key=settlement_key,
        hold=granted.hold if granted else None,
        tpm=ask.tpm if ask else 0,
        tpm_delta=used.total_tokens - (granted.tokens if granted else 0),
        tokens=used.total_tokens,
        cost_nanos=cost,
        periods=periods,
    )
    return settle, granted.local if granted else False


def key_release(settlement_key: str, ask: Ask, granted: Granted, *, unsent: bool = False) -> Step:
    """Give back a key's reservation; `unsent`: the request never went out, so its RPM slot too."""
    settle = Settle(
        scope=ask.scope,
        settlement_key=f"{settlement_key}:{ask.lease}",
        hold=granted.hold,
        tpm=ask.tpm,
        tpm_delta=-granted.tokens,
        rpm=ask.rpm if unsent else 0,
        rpm_delta=-1 if unsent else 0,
    )
    return settle, granted.local
