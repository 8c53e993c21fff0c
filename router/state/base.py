"""The Store interface: the few atomic steps shared state needs, and what they answer.

A Store keeps, per scope (`c:<client>` or `p:<provider>/<key>`): rate-limit windows, leases
(concurrency slots and budget reservations), usage counters per period, idempotency claims
and the ledger of settlement records. Every method is one atomic step: in Redis one Lua
script on one hash slot (the scope is the hash tag), in memory one await-free update.

    acquire(ask)   check every limit of the scope and, only if all pass, reserve them all;
                   with a claim, also take (or answer for) the idempotency key
    settle(s)      release the lease, reconcile TPM (and RPM) with real usage, add usage to
                   the counters, append the record, store or drop the idempotency result —
                   once per settlement key, however often it is replayed
    renew(...)     keep in-flight leases and claims alive (they expire if a replica dies)

acquire_all and settle_all apply several of those steps (of different scopes, so different
hash slots) in one round trip: each step stays atomic on its own, none waits for another.
A request asks its client's and its provider key's scope together before it goes upstream,
and settles both together after (DESIGN-NOTES: one round trip before, one after).

Times in answers are seconds. Scope names and ids come from config and from router itself;
idempotency keys are the client's, limited to printable ASCII.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

CONCURRENCY_RETRY = 1.0
"""Retry-After for a full concurrency limit: when a slot frees is unknowable (streams are long)."""


class StateError(Exception):
    """The store could not be reached or did not answer in time."""


class LateError(StateError):
    """The store answered, but ran the step after its deadline, so it took nothing: this one
    request failed; the store is up (the breaker stays closed)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """An idempotency key to take for this request."""

    key: str
    body_hash: str
    owner: str
    """The settlement key of the request that takes it."""


@dataclass(frozen=True, slots=True)
class Intent:
    """A request that outlived its replica: what that replica wrote at admission (the record's
    known fields, the estimate), and the completion tokens its last renewal reported (-1: none)."""

    settlement_key: str
    body: bytes
    relayed: int = -1


@dataclass(frozen=True, slots=True)
class Ask:
    """What one scope must grant before a request goes upstream. 0 / -1 mean "no such limit"."""

    scope: str
    rpm: int = 0
    tpm: int = 0
    concurrency: int = 0
    tokens: int = 0
    """Tokens to reserve against `tpm` and a token allowance (an estimate)."""
    allowance_tokens: int = -1
    allowance_nanos: int = -1
    """A cost allowance in billionths of the currency unit (integers add up exactly)."""
    cost_nanos: int = 0
    period: str = ""
    """The allowance's period id: "2026-11-22", "2026-11" or "total"."""
    lease: str = ""
    """A unique id; when set, the grant holds a lease (a concurrency slot and the reservation)."""
    claim: Claim | None = None
    budget: bool = False
    """The allowance is a client's budget: never granted from local state while the store is down."""
    on_exceed: str = ""
    """A budget's rule for a reservation over what is left of it: "refuse" (Spent, with what it
    needs and what is left) or "cap" (grant what is left beside the reservations in flight, the
    completion lowered to fit). "" (a key's quota): admitted while anything is left."""
    prompt: int = 0
    """For "cap": the prompt's part of `tokens`; the rest is `n` completions of equal size."""
    n: int = 1
    price_input: float = 0.0
    price_output: float = 0.0
    """For "cap" with a cost allowance: the price `cost_nanos` was computed at (per million tokens)."""
    intent: Intent | None = None
    """The request's settlement intent, kept with a lease while it runs: if its replica dies,
    a surviving one settles it from this (recover). Only shared stores keep it."""

    @property
    def has_allowance(self) -> bool:
        return self.allowance_tokens >= 0 or self.allowance_nanos >= 0

    @property
    def hold(self) -> str:
        """The lease as stored: its id and what it reserved, so expiry can give both back."""
        return f"{self.lease}|{self.tokens if self.allowance_tokens >= 0 else 0}|{self.cost_nanos}"


@dataclass(frozen=True, slots=True)
class Window:
    """Where the scope's request and token windows stand (OpenAI x-ratelimit-* headers)."""

    rpm_remaining: int = -1
    rpm_reset: float = 0.0
    tpm_remaining: int = -1
    tpm_reset: float = 0.0


@dataclass(frozen=True, slots=True)
class Granted:
    window: Window
    hold: str | None
    """The lease to hand back to settle(), if one was taken."""
    tokens: int
    """Tokens actually reserved against `tpm` (the estimate, capped at the limit)."""
    local: bool = False
    """Granted by this process alone because the shared store is down."""
    capped: int = 0
    """on_exceed "cap": the completion tokens per choice the reservation was lowered to (0: not lowered)."""


@dataclass(frozen=True, slots=True)
class Limited:
    limit: str
    """"rpm", "tpm", "concurrency", or "reserved": the allowance is not spent, but requests in
    flight have reserved what is left of it (retry when they finish)."""
    retry_after: float
    window: Window


@dataclass(frozen=True, slots=True)
class Spent:
    """The scope's allowance for this period is used up, or (need > 0) what is left of it is
    less than the request needs: `need` and `left` in tokens, or nanos for a cost allowance."""

    need: int = 0
    left: int = 0


@dataclass(frozen=True, slots=True)
class Conflict:
    """The idempotency key is held by a request still running."""

    retry_after: float = 1.0
    """When the claim runs out unless its owner renews it: a dead owner's claim is gone by then."""


@dataclass(frozen=True, slots=True)
class Reused:
    """The idempotency key was used with a different body."""


@dataclass(frozen=True, slots=True)
class Stored:
    """A finished answer kept for replay under its idempotency key."""

    settlement_key: str
    status: int
    stream: bool
    body: bytes


@dataclass(frozen=True, slots=True)
class Replay:
    stored: Stored


Answer = Granted | Limited | Spent | Conflict | Reused | Replay


@dataclass(frozen=True, slots=True)
class Settle:
    scope: str
    settlement_key: str
    hold: str | None = None
    tpm: int = 0
    tpm_delta: int = 0
    """Real tokens minus those reserved: moves the TPM window back (or on)."""
    rpm: int = 0
    rpm_delta: int = 0
    """-1 gives the request's RPM slot back: it was granted, but the request never went out."""
    tokens: int = 0
    cost_nanos: int = 0
    periods: tuple[str, ...] = ()
    """Counter periods the usage is added to (day, month, total)."""
    record: bytes | None = None
    """The settlement record (JSON) for the scope's ledger."""
    claim_key: str | None = None
    claim_hash: str = ""
    """The claim's body hash: a stored answer re-creates a claim that expired meanwhile."""
    stored: Stored | None = None
    """With `claim_key`: the answer to keep for replays; None lets the key go (a retry runs fresh)."""
    intent: bool = False
    """The client scope's step: its settlement intent ends here (see Ask.intent)."""
    endpoint: str | None = None
    """The client scope's step: the API endpoint (chat, embeddings ...) whose usage this is, also
    counted apart under that name (Used.by_endpoint). Key scopes: None, their usage is not split."""

    @property
    def once(self) -> bool:
        """It must be applied, even late, and may be replayed: it adds usage or a record (applied
        once per settlement key), or ends an intent (which, left, would be recovered as lost)."""
        return self.record is not None or self.tokens != 0 or self.cost_nanos != 0 or self.intent


@dataclass(frozen=True, slots=True)
class Used:
    tokens: int = 0
    cost_nanos: int = 0
    by_endpoint: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Part of it by API endpoint: name -> (tokens, cost nanos), for settlements that named one."""


class Store(Protocol):
    """Shared state. Implementations: memory (one process) and Redis / Redis Cluster."""

    @property
    def sends_now(self) -> bool:
        """A step started now is written to the store within its first loop step, ahead of
        any step this process starts later. Only then may an answer go out before its
        settlement's reply (ledger.Settling): the client's next request must find it applied."""
        ...

    async def acquire(self, ask: Ask) -> Answer: ...

    async def acquire_all(self, asks: Sequence[Ask]) -> list[Answer | StateError]:
        """acquire() for each ask, all sent in one round trip. Never raises: an ask the store
        could not answer comes back as its StateError (on a cluster, one node may fail while
        another answers, and a grant it made must not be lost with the failure)."""
        ...

    async def settle(self, settle: Settle) -> bool:
        """Apply one settlement; False when this settlement key was applied before."""
        ...

    async def settle_all(self, settles: Sequence[Settle]) -> list[bool | StateError]:
        """settle() for each, all sent in one round trip; as acquire_all, never raises."""
        ...

    async def renew(
        self,
        scope: str,
        holds: Sequence[str],
        claims: Sequence[tuple[str, str]],
        intents: Sequence[tuple[str, int]] = (),
    ) -> None:
        """Extend leases (`holds`), claims (`(key, owner)`) and settlement intents
        (`(settlement key, completion tokens relayed so far or -1)`) still in flight."""
        ...

    async def recover(self, scope: str, *, grace: float, limit: int) -> list[Intent]:
        """Intents whose lease ran out `grace` seconds ago or more (their replica died), at
        most `limit`; each is held back from other callers for a lease's time while the caller
        settles it (under its own settlement key, so twice is once)."""
        ...

    async def usage(self, scope: str, periods: Sequence[str]) -> dict[str, Used]: ...

    async def records(self, scope: str, *, since: float = 0.0) -> list[bytes]:
        """The scope's settlement records (JSON), oldest first, written at or after `since` (epoch s)."""
        ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
