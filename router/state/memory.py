"""The memory store: the one-process sidecar's state, each step an await-free update.

Steps run to completion between awaits, so they are as atomic here as a Lua script is in
Redis. The ledger is a bounded list per scope, plus an optional JSONL file that survives
the process (what `router ledger` reads when state is in memory).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import gcra
from .base import (
    CONCURRENCY_RETRY,
    Answer,
    Ask,
    Conflict,
    Granted,
    Intent,
    Limited,
    Replay,
    Reused,
    Settle,
    Spent,
    StateError,
    Stored,
    Used,
    Window,
)

log = logging.getLogger("router.state")

LEDGER_MAX = 10_000
"""Records kept in memory per scope (for this process's readers); the JSONL file
(state.ledger_file) keeps them all. Bounded so a busy sidecar's memory is too."""
DONE_MAX = 100_000
"""Settlement keys remembered per scope for once-only settling. In one process a request
settles once by construction; this guards a repeat within seconds, and must not grow with
every request for a day (retention) at thousands a second."""


@dataclass(slots=True)
class _Claim:
    body_hash: str
    owner: str
    expires: float
    stored: Stored | None = None


@dataclass(slots=True)
class _Scope:
    tat: dict[str, float] = field(default_factory=dict)
    leases: dict[str, float] = field(default_factory=dict)
    held_tokens: int = 0
    held_nanos: int = 0
    used: dict[str, list[int]] = field(default_factory=dict)
    """Per period: [tokens, cost nanos]."""
    by_endpoint: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Per period, per API endpoint: [tokens, cost nanos] (the client scope's)."""
    claims: dict[str, _Claim] = field(default_factory=dict)
    done: OrderedDict[str, float] = field(default_factory=OrderedDict)
    ledger: deque[tuple[float, bytes]] = field(default_factory=lambda: deque(maxlen=LEDGER_MAX))


class MemoryStore:
    sends_now = False  # nothing to send: its steps never wait (GuardedStore.immediate)

    def __init__(
        self,
        *,
        lease_ttl: float = 30.0,
        retention: float = 86400.0,
        ledger_file: str | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self._lease_ttl = lease_ttl
        self._retention = retention
        self._clock = clock
        self._ledger_file = Path(ledger_file) if ledger_file else None
        self._scopes: dict[str, _Scope] = {}

    def _scope(self, name: str) -> _Scope:
        scope = self._scopes.get(name)
        if scope is None:
            scope = self._scopes[name] = _Scope()
        return scope

    async def acquire(self, ask: Ask) -> Answer:
        now = self._clock()
        s = self._scope(ask.scope)
        if ask.claim is not None:
            claim = s.claims.get(ask.claim.key)
            if claim is not None and claim.expires <= now:  # its replica died mid-request
                del s.claims[ask.claim.key]
                claim = None
            if claim is not None:
                if claim.body_hash != ask.claim.body_hash:
                    return Reused()
                if claim.stored is not None:
                    return Replay(claim.stored)
                return Conflict(max(1.0, claim.expires - now))
        self._expire_leases(s, now)
        tokens, hold, capped = ask.tokens, ask.hold if ask.lease else None, 0
        if ask.has_allowance:
            used = s.used.get(ask.period, [0, 0])
            if (ask.allowance_tokens >= 0 and used[0] >= ask.allowance_tokens) or (
                ask.allowance_nanos >= 0 and used[1] >= ask.allowance_nanos
            ):
                return Spent()
            if not ask.on_exceed:  # a key's quota: admitted while anything is left
                if (ask.allowance_tokens >= 0 and used[0] + s.held_tokens >= ask.allowance_tokens) or (
                    ask.allowance_nanos >= 0 and used[1] + s.held_nanos >= ask.allowance_nanos
                ):
                    return Limited("reserved", CONCURRENCY_RETRY, Window())
            else:
                verdict = _budget(ask, used[0], used[1], s.held_tokens, s.held_nanos)
                if not isinstance(verdict, tuple):
                    return verdict
                capped, nanos = verdict
                if capped:
                    tokens = ask.prompt + capped * ask.n
                    if hold is not None:
                        hold = f"{ask.lease}|{tokens if ask.allowance_tokens >= 0 else 0}|{nanos}"
        rpm = gcra.check(s.tat.get("rpm"), now, limit=ask.rpm, cost=1) if ask.rpm else None
        cost = min(tokens, ask.tpm)
        tpm = gcra.check(s.tat.get("tpm"), now, limit=ask.tpm, cost=cost) if ask.tpm else None
        window = Window(
            rpm_remaining=rpm.remaining if rpm else -1,
            rpm_reset=rpm.reset if rpm else 0.0,
            tpm_remaining=tpm.remaining if tpm else -1,
            tpm_reset=tpm.reset if tpm else 0.0,
        )
        if ask.concurrency and len(s.leases) >= ask.concurrency:
            return Limited("concurrency", CONCURRENCY_RETRY, window)
        if rpm is not None and not rpm.allowed:
            return Limited("rpm", rpm.retry_after, window)
        if tpm is not None and not tpm.allowed:
            return Limited("tpm", tpm.retry_after, window)
        if rpm is not None:
            s.tat["rpm"] = rpm.tat
        if tpm is not None:
            s.tat["tpm"] = tpm.tat
        if hold is not None:
            s.leases[hold] = now + self._lease_ttl
            tokens, nanos = _amounts(hold)
            s.held_tokens += tokens
            s.held_nanos += nanos
        if ask.claim is not None:
            s.claims[ask.claim.key] = _Claim(ask.claim.body_hash, ask.claim.owner, now + self._lease_ttl)
        return Granted(window, hold, cost if ask.tpm else 0, capped=capped)

    async def settle(self, settle: Settle) -> bool:
        now = self._clock()
        s = self._scope(settle.scope)
        if settle.once:
            self._expire_done(s, now)
            if settle.settlement_key in s.done:
                return False
            s.done[settle.settlement_key] = now + self._retention
            if len(s.done) > DONE_MAX:
                s.done.popitem(last=False)
        if settle.hold is not None and s.leases.pop(settle.hold, None) is not None:
            tokens, nanos = _amounts(settle.hold)
            s.held_tokens -= tokens
            s.held_nanos -= nanos
        windows = (("tpm", settle.tpm, settle.tpm_delta), ("rpm", settle.rpm, settle.rpm_delta))
        for window, limit, delta in windows:
            if limit and delta:
                tat = gcra.reconcile(s.tat.get(window), now, limit=limit, delta=delta)
                if tat is not None:
                    s.tat[window] = tat
        if settle.tokens or settle.cost_nanos:
            for period in settle.periods:
                used = s.used.setdefault(period, [0, 0])
                used[0] += settle.tokens
                used[1] += settle.cost_nanos
                if settle.endpoint:
                    part = s.by_endpoint.setdefault(period, {}).setdefault(settle.endpoint, [0, 0])
                    part[0] += settle.tokens
                    part[1] += settle.cost_nanos
        if settle.record is not None:
            s.ledger.append((now, settle.record))
        if settle.claim_key is not None:
            claim = s.claims.get(settle.claim_key)
            if claim is not None and claim.expires <= now:
                claim = None  # expired: treated as absent, as Redis would have dropped it
            if claim is None or (claim.owner == settle.settlement_key and claim.stored is None):
                if settle.stored is None:
                    s.claims.pop(settle.claim_key, None)
                else:  # kept even if the claim expired meanwhile (a settlement that waited)
                    s.claims[settle.claim_key] = _Claim(
                        claim.body_hash if claim else settle.claim_hash,
                        settle.settlement_key,
                        now + self._retention,
                        settle.stored,
                    )
        if settle.record is not None and self._ledger_file is not None:
            self._append_to_file(settle.record)  # last: the step above is complete whatever happens
        return True

    async def acquire_all(self, asks: Sequence[Ask]) -> list[Answer | StateError]:
        found: list[Answer | StateError] = []
        for ask in asks:
            try:  # this store never fails; a subclass standing in for a failing one may
                found.append(await self.acquire(ask))
            except StateError as error:
                found.append(error)
        return found

    async def settle_all(self, settles: Sequence[Settle]) -> list[bool | StateError]:
        found: list[bool | StateError] = []
        for settle in settles:
            try:
                found.append(await self.settle(settle))
            except StateError as error:
                found.append(error)
        return found

    def _append_to_file(self, record: bytes) -> None:
        assert self._ledger_file is not None
        try:
            with self._ledger_file.open("ab") as f:
                f.write(record + b"\n")
        except OSError as error:  # the in-memory ledger still has it; say so loudly
            log.error("state: could not append to %s: %s", self._ledger_file, error)

    async def renew(
        self,
        scope: str,
        holds: Sequence[str],
        claims: Sequence[tuple[str, str]],
        intents: Sequence[tuple[str, int]] = (),
    ) -> None:
        # Intents are not kept: a process that dies takes its memory state (and requests) with it.
        now = self._clock()
        s = self._scope(scope)
        for hold in holds:
            if hold in s.leases:
                s.leases[hold] = now + self._lease_ttl
        for key, owner in claims:
            claim = s.claims.get(key)
            if claim is not None and claim.owner == owner and claim.stored is None:
                claim.expires = now + self._lease_ttl
        for key in [k for k, c in s.claims.items() if c.expires <= now]:
            del s.claims[key]

    async def recover(self, scope: str, *, grace: float, limit: int) -> list[Intent]:
        return []

    async def usage(self, scope: str, periods: Sequence[str]) -> dict[str, Used]:
        s = self._scope(scope)
        found = {}
        for p in periods:
            tokens, nanos = s.used.get(p, (0, 0))
            parts = {name: (t, n) for name, (t, n) in s.by_endpoint.get(p, {}).items()}
            found[p] = Used(tokens, nanos, parts)
        return found

    async def records(self, scope: str, *, since: float = 0.0) -> list[bytes]:
        return [record for at, record in self._scope(scope).ledger if at >= since]

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _expire_leases(self, s: _Scope, now: float) -> None:
        expired = [hold for hold, expires in s.leases.items() if expires <= now]
        for hold in expired:  # a replica (here: a task) that never settled: give it back
            del s.leases[hold]
            tokens, nanos = _amounts(hold)
            s.held_tokens -= tokens
            s.held_nanos -= nanos

    def _expire_done(self, s: _Scope, now: float) -> None:
        while s.done:
            expires = next(iter(s.done.values()))
            if expires > now:
                break
            s.done.popitem(last=False)


def _budget(
    ask: Ask, used_t: int, used_n: int, held_t: int, held_n: int
) -> Spent | Limited | tuple[int, int]:
    """A budget's step of acquire (as acquire.lua's): a request that needs more than is left
    is refused, or with on_exceed "cap" lowered to what is left beside the reservations in
    flight; one that fits what is left only once those finish waits for them ("reserved").
    Otherwise what to reserve: (completion tokens per choice it was capped to or 0, nanos)."""
    at, an = ask.allowance_tokens, ask.allowance_nanos
    reserved = Limited("reserved", CONCURRENCY_RETRY, Window())

    def over(need_t: int, need_n: int) -> Spent | None:
        if at >= 0 and need_t > at - used_t:
            return Spent(need_t, at - used_t)
        if an >= 0 and need_n > an - used_n:
            return Spent(need_n, an - used_n)
        return None

    need_t = ask.tokens if at >= 0 else 0
    refusal = over(need_t, ask.cost_nanos)
    if refusal is None:
        if (at >= 0 and used_t + held_t + need_t > at) or (an >= 0 and used_n + held_n + ask.cost_nanos > an):
            return reserved
        return 0, ask.cost_nanos
    if ask.on_exceed != "cap":
        return refusal
    # The most completion tokens per choice that fit what is left beside what is held; the
    # same float arithmetic as the script's, and as limits.cost_nanos.
    prompt, n, pin, pout = ask.prompt, ask.n, ask.price_input, ask.price_output

    def cost(c: int) -> int:
        return math.ceil(prompt * pin * 1000 + c * n * pout * 1000)

    room_t, room_n = at - used_t - held_t, an - used_n - held_n
    c = (ask.tokens - prompt) // n
    if at >= 0:
        c = min(c, math.floor((room_t - prompt) / n))
    if an >= 0 and pout > 0:
        most = c  # then the float estimate, made exact: the most whose cost fits
        c = min(c, math.floor((room_n - prompt * pin * 1000) / (n * pout * 1000)))
        while c < most and cost(c + 1) <= room_n:
            c += 1
        while c >= 1 and cost(c) > room_n:
            c -= 1
    if c >= 1 and ((at >= 0 and prompt + c * n > room_t) or (an >= 0 and cost(c) > room_n)):
        c = 0
    if c < 1:
        return over(prompt + n, cost(1)) or reserved
    return c, cost(c) if an >= 0 else 0


def _amounts(hold: str) -> tuple[int, int]:
    _, tokens, nanos = hold.rsplit("|", 2)
    return int(tokens), int(nanos)
