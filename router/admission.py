"""What a request takes from shared state before it goes upstream (SPEC §6).

An Admission holds its client's ask (limits, budget, idempotency claim) still unsent: the
first attempt sends it together with its provider key's ask, so a request costs one round
trip to the store before it goes upstream (DESIGN-NOTES). The client's answer comes first:
a refusal (its 429 or 402, 409, 422, or a replay; refusals.py says which) ends the request
and gives back what the key granted in the same round trip. If no attempt is ever made, the
ask is still sent before the request fails, so a replay or the client's own limit answers
rather than the providers' state.

What the request took is given back, and its usage recorded, by its settlement
(settlement.py) when it ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import orjson

from . import limits, metrics, records
from .call import Call
from .config import Limits, Target
from .errors import StateUnavailable
from .ledger import Ledger
from .refusals import STATE_RETRY, refused
from .state import (
    Answer,
    Ask,
    Claim,
    Granted,
    GuardedStore,
    Intent,
    Limited,
    StateUnavailableError,
    Window,
)
from .steps import ClientHold, client_step, key_release
from .types import RawHeaders, Usage

NO_LIMITS = Limits()
DEGRADED = (b"x-router-degraded", b"state")
CAPPED = b"x-router-budget-capped"
"""The completion tokens a request was sent with, lowered to fit its client's budget (on_exceed: cap)."""


def admit(ledger: Ledger, call: Call) -> Admission:
    """An Admission for `call`, holding what its client's scope must grant. Nothing is
    asked of the store yet: the first attempt asks (reserve_key), so a refusal or a
    replay is raised from there."""
    if ledger.state.refusing:
        raise StateUnavailable(
            "Shared state is unavailable, so this request cannot be settled exactly once; retry shortly.",
            headers={"retry-after": STATE_RETRY},
        )
    settlement_key = "stl_" + os.urandom(12).hex()
    client = call.client
    reserve = limits.estimate(call.body, len(call.raw), answers=call.endpoint.kind == "chat")
    budget = client.budget if client else None
    # A cost budget reserves at the dearest target's price; nothing else needs a price.
    price = limits.dearest(call.targets) if budget is not None and budget.cost is not None else None
    claim = None
    if call.idempotency is not None:
        claim = Claim(call.idempotency, _fingerprint(call), settlement_key)
    scope = limits.client_scope(call.client_name)
    ask = limits.ask(
        scope,
        client.limits if client else NO_LIMITS,
        budget,
        reserve=reserve,
        price=price,
        lease=settlement_key,
        claim=claim,
        budget=True,
        n=call.choices,
    )
    intent_only = ask is None and not ledger.state.immediate
    if intent_only:
        ask = Ask(scope)  # nothing to check, but an intent to leave (recovery.py)
    admission = Admission(ledger, call, settlement_key, reserve, ask, intent_only=intent_only)
    ledger.hold(settlement_key, admission)  # renewed once it holds leases; forgotten when settled
    return admission


INTENT_ONLY = Granted(Window(), None, 0)
"""What a client scope with nothing to check grants: its intent alone, not waited for."""


async def _granted_or_not(step: Awaitable[object]) -> None:
    await step  # a failure is the guard's to count; the request goes on without its intent


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """A provider key that cannot take this request now: for `wait` seconds, or until its quota rolls."""

    wait: float
    quota: bool
    remember: bool = True
    """Skip the key in other requests too until `wait` has passed."""


class Admission:
    """One request's hold on shared state until it is settled."""

    def __init__(
        self,
        ledger: Ledger,
        call: Call,
        settlement_key: str,
        reserve: Usage,
        ask: Ask | None,
        *,
        intent_only: bool = False,
    ):
        self._ledger = ledger
        self._intent_only = intent_only
        """The client's scope has nothing to check: its ask only leaves the intent."""
        self.call = call
        self.settlement_key = settlement_key
        self.reserve = reserve
        """What the request is expected to use at most: reserved against TPM, budgets and quotas."""
        self.ask = ask
        self._unsent = ask
        """The client's ask until the first attempt (or admit()) sends it."""
        self.granted: Granted | None = None
        self.capped = 0
        """Completion tokens per choice the client's budget let through (on_exceed: cap), or 0:
        the request goes with its max_tokens lowered to it (proxy.py)."""
        self.keys: dict[Target, tuple[Ask, Granted]] = {}
        """What each provider key granted, until the attempt's end gives it back or settles it."""
        self.started_at = time.time()
        self.refused = False
        """The client's scope refused the request: nothing was taken, nothing is settled."""
        self.headers: RawHeaders = []
        """For the response: rate-limit windows, a capped budget, a degraded store."""
        self.relayed_so_far: Callable[[], int] | None = None
        """Set by the request's owner: what it has relayed, for renewals (recovery.py)."""

    @property
    def held(self) -> ClientHold:
        """What it holds in its client's scope now."""
        return ClientHold(self.settlement_key, self.call.client_name, self.ask, self.granted)

    @property
    def _state(self) -> GuardedStore:
        return self._ledger.state

    def relayed(self) -> int:
        return self.relayed_so_far() if self.relayed_so_far is not None else -1

    def grants(self) -> list[tuple[Ask, Granted]]:
        """What the request holds now (renewed by the ledger's keeper while it runs)."""
        found = list(self.keys.values())
        if self.ask is not None and self.granted is not None:
            found.append((self.ask, self.granted))
        return found

    async def admit(self) -> None:
        """Send the client's ask if no attempt has: a request that no target could take still
        gets its replay, its 409 or 422, or its own 429 or 402 rather than the providers' error."""
        if self._unsent is not None:
            await self._acquire(None)

    async def reserve_key(self, target: Target) -> KeyRefusal | None:
        """Reserve `target`'s key limits and quota for one attempt; a refusal names how long.
        The first call also admits the request into its client's scope, in the same round
        trip: a refusal there is raised (Replayed, or the error to answer with)."""
        provider = target.provider
        ask = limits.ask(
            limits.key_scope(target),
            provider.limits,
            provider.quota,
            reserve=self.reserve,
            price=target.route.price,
            lease=f"{self.settlement_key}.{len(self.keys)}",
        )
        answer = await self._acquire(ask, target)
        if ask is None:
            return None
        assert answer is not None
        if isinstance(answer, StateUnavailableError):  # on_failure: closed
            raise StateUnavailable(
                "Shared state is unavailable; retry shortly.", headers={"retry-after": STATE_RETRY}
            )
        if isinstance(answer, Granted):
            self.keys[target] = (ask, answer)
            if answer.local and DEGRADED not in self.headers:
                self.headers.append(DEGRADED)
            return None
        limit = answer.limit if isinstance(answer, Limited) else "quota"
        metrics.RATE_LIMITED.labels("key", target.name, limit).inc()
        if isinstance(answer, Limited):
            # A full concurrency limit or a quota reserved by requests in flight frees up any
            # moment: skip the key for this request only. A window says when it has room.
            remember = answer.limit not in ("concurrency", "reserved")
            return KeyRefusal(answer.retry_after, quota=False, remember=remember)
        assert provider.quota is not None
        return KeyRefusal(limits.seconds_to_rollover(provider.quota), quota=True)

    async def release_key(self, target: Target) -> None:
        """An attempt failed: give back its key's reservation (it used no tokens)."""
        held = self.keys.pop(target, None)
        if held is not None:
            await self._state.settle_all([key_release(self.settlement_key, *held)])

    async def _acquire(
        self, key_ask: Ask | None, target: Target | None = None
    ) -> Answer | StateUnavailableError | None:
        """Ask the store for `key_ask` and, the first time, the client's ask with it: one round
        trip. Returns the key's answer; raises the client's refusal. The client's ask sent
        before an attempt to `target` leaves the request's intent in shared state."""
        client_ask, self._unsent = self._unsent, None
        if client_ask is not None and target is not None and not self._state.immediate:
            client_ask = self.ask = replace(client_ask, intent=self._intent(target))
            if key_ask is None and self._intent_only:
                await self._leave_intent(client_ask)
                return None
        asks = [a for a in (client_ask, key_ask) if a is not None]
        if not asks:
            return None
        state = self._state
        if state.immediate:  # never suspends: nothing can cancel it midway
            answers = await state.acquire_all(asks)
        else:
            step = asyncio.ensure_future(state.acquire_all(asks))
            try:
                answers = await asyncio.shield(step)
            except asyncio.CancelledError:  # the client left mid-trip: give back what it granted
                step.add_done_callback(lambda done: self._give_back(done, client_ask, key_ask))
                raise
        key_answer = answers[-1] if key_ask is not None else None
        if client_ask is not None:
            await self._client_answered(answers[0], key_ask, key_answer)
        return key_answer

    async def _leave_intent(self, ask: Ask) -> None:
        """Write an intent that nothing waits for: its reply cannot refuse the request, so it
        costs no round trip before the upstream call. One loop step lets its write go out
        first (as a settlement's does, ledger.Settling), so a replica killed once the
        provider has the request has already left its intent in Redis."""
        self._ledger.track(_granted_or_not(self._state.acquire_all([ask])))
        self.granted = INTENT_ONLY  # so the settlement ends the intent (steps.client_step)
        await asyncio.sleep(0)

    def _intent(self, target: Target) -> Intent:
        """What a surviving replica needs to settle this request if this one dies: the
        record's head and the estimate (recovery.py reads it)."""
        price = target.route.price
        body = {
            "head": records.head(self.call, self.settlement_key, target),
            "started_at": self.started_at,
            "prompt_tokens": self.reserve.prompt_tokens,
            "completion_tokens": self.reserve.completion_tokens,
            "price": [price.input, price.cached_input, price.output] if price else None,
        }
        return Intent(self.settlement_key, orjson.dumps(body))

    def _give_back(
        self, step: asyncio.Future[list[Answer | StateUnavailableError]], client: Ask | None, key: Ask | None
    ) -> None:
        """What a cancelled first round trip was granted, given back: the request never went out."""
        if step.cancelled() or step.exception() is not None:
            return
        answers = step.result()
        steps = []
        if client is not None and isinstance(answers[0], Granted):
            # Not kept as self.granted: the settlement may run meanwhile, and must not give it back too.
            hold = ClientHold(self.settlement_key, self.call.client_name, self.ask, answers[0])
            steps += client_step(hold, None, None, None)
        if key is not None and isinstance(answers[-1], Granted):
            steps.append(key_release(self.settlement_key, key, answers[-1], unsent=True))
        if steps:
            self._ledger.finish(self._state.settle_all(steps)).detach()

    async def _client_answered(
        self,
        answer: Answer | StateUnavailableError,
        key_ask: Ask | None,
        key_answer: Answer | StateUnavailableError | None,
    ) -> None:
        """Take the client's answer; a refusal ends the request, with nothing to settle."""
        client = self.call.client
        if isinstance(answer, Granted):
            self.granted = answer
            if answer.capped:  # later keys reserve what the request may now use
                self.capped = answer.capped
                self.reserve = Usage(self.reserve.prompt_tokens, answer.capped * self.call.choices)
                self.headers.append((CAPPED, str(answer.capped).encode()))
            if answer.local:
                self.headers.append(DEGRADED)
            if client is not None:
                self.headers += limits.limit_headers(client.limits, answer.window)
            return
        self.refused = True
        self._ledger.forget(self.settlement_key)  # nothing held: nothing to renew or settle
        refusal = refused(answer, client)
        if isinstance(key_answer, Granted):  # asked alongside: it must consume nothing either
            assert key_ask is not None
            release = key_release(self.settlement_key, key_ask, key_answer, unsent=True)
            await self._ledger.finish(self._state.settle_all([release])).done()
        raise refusal


def _fingerprint(call: Call) -> str:
    """What a reused idempotency key must match: the body, and the API it came by — a Messages
    body is also a Chat Completions body, and each API's stored answer reads only to its own
    clients. Chat's is the body's hash alone, as before there were endpoints, so the claims
    already in a store still match."""
    digest = hashlib.sha256()
    if call.endpoint.name != "chat":
        digest.update(call.endpoint.name.encode() + b"\0")
    digest.update(call.raw)
    return digest.hexdigest()[:32]
