"""One request's hold on shared state, from admission to settlement (SPEC §6).

The Ledger opens a Ticket for a request with its client's ask (limits, budget, idempotency
claim) still unsent: the first attempt sends it together with its provider key's ask, so a
request costs one round trip to the store before it goes upstream (DESIGN-NOTES). The
client's answer comes first: a refusal (its 429 or 402, 409, 422, or a replay; refusals.py
says which) ends the request and gives back what the key granted in the same round trip. If no attempt is ever
made, the ask is still sent before the request fails, so a replay or the client's own limit
answers rather than the providers' state.

Whichever path ends the request (a whole answer, an error, a stream's end, the client
leaving, a cancellation) settles it, once, in one round trip: one store step per scope that
releases the leases, reconciles TPM with the real usage, adds the usage to the counters and
appends the record to the client's ledger. A request that did no upstream work settles
nothing and lets its idempotency key go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from . import limits, logs, metrics
from .classify import Verdict
from .config import Client, Target
from .context import RequestContext
from .errors import (
    RouterError,
    StateUnavailable,
    UpstreamStatusError,
)
from .refusals import STATE_RETRY, refused
from .responses import BytesResponse, StreamResponse
from .state import (
    Answer,
    Ask,
    Granted,
    GuardedStore,
    Limited,
    Settle,
    StateUnavailableError,
    Stored,
)
from .types import JSON, Usage


class Ledger(Protocol):
    """What a ticket needs of the ledger that opened it (ledger.Ledger)."""

    state: GuardedStore

    def later(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    async def settle_now(self, work: Coroutine[Any, Any, None]) -> None: ...

    async def start(self, work: Coroutine[Any, Any, None]) -> Awaitable[None]: ...

    def forget(self, settlement_key: str) -> None: ...


DEGRADED = (b"x-router-degraded", b"state")
CAPPED = b"x-router-budget-capped"
"""The completion tokens a request was sent with, lowered to fit its client's budget (on_exceed: cap)."""


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """A provider key that cannot take this request now: for `wait` seconds, or until its quota rolls."""

    wait: float
    quota: bool
    remember: bool = True
    """Skip the key in other requests too until `wait` has passed."""


class Ticket:
    """One request's hold on shared state, from admission to settlement."""

    def __init__(
        self,
        ledger: Ledger,
        ctx: RequestContext,
        client: Client | None,
        body: JSON,
        reserve: Usage,
        ask: Ask | None,
        idempotency: str | None,
    ):
        self._ledger = ledger
        self.ctx = ctx
        self.client = client
        self.model: str = body["model"]
        self.reserve = reserve
        self.ask = ask
        self._unsent = ask
        """The client's ask until the first attempt (or admit()) sends it."""
        self.idempotency = idempotency
        self.settlement_key = ctx.settlement_key or ""
        self.granted: Granted | None = None
        self.capped = 0
        """Completion tokens per choice the client's budget let through (on_exceed: cap), or 0:
        the request goes with its max_tokens lowered to it (proxy.py)."""
        self._choices = limits.choices(body)
        self._keys: dict[Target, tuple[Ask, Granted]] = {}
        self.started_at = time.time()
        self.closed = False

    # -- how a request ends: each path settles once -------------------------------------

    async def answered(self, response: BytesResponse) -> None:
        """A whole answer, about to be sent. With an idempotency key it is stored first, so a
        retry that follows the answer finds it. Without one, when the store writes a step at
        once (Store.sends_now: a single Redis, ready), the answer does not wait for the
        settlement's reply: the round trip is written first and its reply awaited after the
        body is sent (c=1 full, p50 +0.972 -> +0.857 ms). Otherwise (a cluster, a store
        starting or down, memory) the settlement comes first, as before."""
        stored = self._stored(200, stream=False, body=response.body)
        ctx = self.ctx
        done = self.close(
            status=200,
            outcome="completed",
            usage=None if ctx.usage_estimated else ctx.usage,
            estimated=ctx.usage if ctx.usage_estimated else self._guess(0),
            stored=stored,
        )
        if stored is None and self._state.sends_now:
            response.after = await self._ledger.start(done)
        else:
            await self._ledger.settle_now(done)

    async def failed(self, error: RouterError) -> None:
        """The request ends with `error`. A final answer that is the client's fault (a 400 from
        the provider) is kept for replay; one that a retry may fix is not (SPEC §8)."""
        keep = isinstance(error, UpstreamStatusError) and error.verdict == Verdict.CLIENT_FAULT
        stored = self._stored(error.http_status, stream=False, body=error.body()) if keep else None
        done = self.close(status=error.http_status, outcome="error", usage=None, stored=stored)
        await self._ledger.settle_now(done)

    def abandoned(self) -> None:
        """The client left (or the server is stopping) before an answer: settle in the background."""
        self.ctx.outcome = "client_disconnected"
        self._ledger.later(
            self.close(status=499, outcome="client_disconnected", usage=None, estimated=self._guess(0))
        )

    def follow(self, response: StreamResponse) -> None:
        """Settle `response` when it ends. With an idempotency key it is kept for replay."""
        if self.idempotency is not None:
            response.sent = []
        response.settle = self._stream_ended
        response.later = self._ledger.later
        response.settle_now = self._ledger.settle_now

    async def _stream_ended(self, response: StreamResponse) -> None:
        relay = response.relay
        stored = None
        if response.outcome == "completed" and response.sent is not None:
            stored = self._stored(200, stream=True, body=b"".join(response.sent))
        await self.close(
            status=200,
            outcome=response.outcome if response.outcome != "pending" else "client_disconnected",
            usage=relay.usage,
            estimated=relay.estimate(),  # what the client's usage chunk said, when it asked
            stored=stored,
        )

    def _stored(self, status: int, *, stream: bool, body: bytes) -> Stored | None:
        if self.idempotency is None:
            return None
        return Stored(self.settlement_key, status, stream, body)

    def _guess(self, completion: int) -> Usage:
        return Usage(self.reserve.prompt_tokens, completion)

    def grants(self) -> list[tuple[Ask, Granted]]:
        found = list(self._keys.values())
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
            lease=f"{self.settlement_key}.{len(self._keys)}",
        )
        answer = await self._acquire(ask)
        if ask is None:
            return None
        assert answer is not None
        if isinstance(answer, StateUnavailableError):  # on_failure: closed
            raise StateUnavailable(
                "Shared state is unavailable; retry shortly.", headers={"retry-after": STATE_RETRY}
            )
        if isinstance(answer, Granted):
            self._keys[target] = (ask, answer)
            if answer.local and DEGRADED not in self.ctx.headers:
                self.ctx.headers.append(DEGRADED)
            return None
        key_name = target.name
        limit = answer.limit if isinstance(answer, Limited) else "quota"
        metrics.RATE_LIMITED.labels("key", key_name, limit).inc()
        if isinstance(answer, Limited):
            # A full concurrency limit or a quota reserved by requests in flight frees up any
            # moment: skip the key for this request only. A window says when it has room.
            remember = answer.limit not in ("concurrency", "reserved")
            return KeyRefusal(answer.retry_after, quota=False, remember=remember)
        assert provider.quota is not None
        return KeyRefusal(limits.seconds_to_rollover(provider.quota), quota=True)

    async def _acquire(self, key_ask: Ask | None) -> Answer | StateUnavailableError | None:
        """Ask the store for `key_ask` and, the first time, the client's ask with it: one round
        trip. Returns the key's answer; raises the client's refusal."""
        client_ask, self._unsent = self._unsent, None
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

    def _give_back(
        self, step: asyncio.Future[list[Answer | StateUnavailableError]], client: Ask | None, key: Ask | None
    ) -> None:
        """What a cancelled first round trip was granted, given back: the request never went out."""
        if step.cancelled() or step.exception() is not None:
            return
        answers = step.result()
        steps = []
        if client is not None and isinstance(answers[0], Granted):
            # Not kept as self.granted: close() may run meanwhile, and must not give it back too.
            steps += self._client_settle(None, None, None, granted=answers[0])
        if key is not None and isinstance(answers[-1], Granted):
            steps.append(self._release(key, answers[-1], unsent=True))
        if steps:
            self._ledger.later(self._state.settle_all(steps))

    async def _client_answered(
        self,
        answer: Answer | StateUnavailableError,
        key_ask: Ask | None,
        key_answer: Answer | StateUnavailableError | None,
    ) -> None:
        """Take the client's answer; a refusal ends the request, with nothing to settle."""
        ctx = self.ctx
        if isinstance(answer, Granted):
            self.granted = answer
            if answer.capped:  # later keys reserve what the request may now use
                self.capped = answer.capped
                self.reserve = Usage(self.reserve.prompt_tokens, answer.capped * self._choices)
                ctx.headers.append((CAPPED, str(answer.capped).encode()))
            if answer.local:
                ctx.headers.append(DEGRADED)
            if self.client is not None:
                ctx.headers += limits.limit_headers(self.client.limits, answer.window)
            return
        self.closed = True
        self._ledger.forget(self.settlement_key)
        ctx.settlement_key = None
        refusal = refused(answer, self.client, self.ctx)
        if isinstance(key_answer, Granted):  # asked alongside: it must consume nothing either
            assert key_ask is not None
            give_back = self._state.settle_all([self._release(key_ask, key_answer, unsent=True)])
            await self._ledger.settle_now(give_back)
        raise refusal

    async def release_key(self, target: Target) -> None:
        """An attempt failed: give back its key's reservation (it used no tokens)."""
        held = self._keys.pop(target, None)
        if held is not None:
            await self._state.settle_all([self._release(*held)])

    def _release(self, ask: Ask, granted: Granted, *, unsent: bool = False) -> tuple[Settle, bool]:
        """Give back a key's reservation; `unsent`: the request never went out, so its RPM slot too."""
        settle = Settle(
            scope=ask.scope,
            settlement_key=f"{self.settlement_key}:{ask.lease}",
            hold=granted.hold,
            tpm=ask.tpm,
            tpm_delta=-granted.tokens,
            rpm=ask.rpm if unsent else 0,
            rpm_delta=-1 if unsent else 0,
        )
        return settle, granted.local

    @property
    def _state(self) -> GuardedStore:
        return self._ledger.state

    async def close(
        self,
        *,
        status: int,
        outcome: str,
        usage: Usage | None,
        estimated: Usage | None = None,
        stored: Stored | None = None,
    ) -> None:
        """Settle: once, whatever path gets here first."""
        if self.closed:
            return
        self.closed = True
        ctx = self.ctx
        key = self.settlement_key
        self._ledger.forget(key)
        target = ctx.target if ctx.attempts else None
        releases = [self._release(*self._keys.pop(t)) for t in list(self._keys) if t is not target]
        if target is None:  # no upstream work: nothing is settled, the idempotency key goes free
            ctx.settlement_key = None
            steps = [*self._client_settle(None, None, None), *releases]
            if steps:
                await self._state.settle_all(steps)
            return
        used = usage or estimated or Usage(0, 0)
        cost = limits.cost_nanos(used, target.route.price)
        ctx.tokens, ctx.outcome = used, outcome
        client_name = self.client.name if self.client else ""
        labels = (client_name, self.model, target.provider.name)
        metrics.tokens(*labels, "prompt").inc(used.prompt_tokens)
        metrics.tokens(*labels, "completion").inc(used.completion_tokens)
        if cost:
            metrics.cost(*labels).inc(cost / 1e9)
        # Copied to its own size: orjson (3.13) hands back bytes that keep a 4 KiB allocation
        # behind a ~500-byte record, and records are kept (memory ledger, outbox): 8 KiB a
        # request, measured with tracemalloc, was the whole of the sidecar's memory growth.
        record = compact(
            orjson.dumps(
                {
                    "settlement_key": key,
                    "request_id": ctx.request_id,
                    "idempotency_key": self.idempotency,
                    "client": self.client.name if self.client else None,
                    "provider": target.provider.name,
                    "key": target.key.name,
                    "model": self.model,
                    "upstream_model": target.route.upstream,
                    "prompt_tokens": used.prompt_tokens,
                    "completion_tokens": used.completion_tokens,
                    "cost": cost / 1e9,
                    "usage_source": "provider" if usage is not None else "estimated",
                    "status": status,
                    "outcome": outcome,
                    "started_at": logs.utc_iso(self.started_at),
                    "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
                }
            )
        )
        periods = limits.periods(self.started_at)
        steps = [*self._client_settle(used, cost, record, stored, periods), *releases]
        held = self._keys.pop(target, None)
        if held is not None or used.total_tokens or cost:  # the key's quota and usage counters
            key_ask, granted = held if held is not None else (None, None)
            settle = Settle(
                scope=limits.key_scope(target),
                settlement_key=key,
                hold=granted.hold if granted else None,
                tpm=key_ask.tpm if key_ask else 0,
                tpm_delta=used.total_tokens - (granted.tokens if granted else 0),
                tokens=used.total_tokens,
                cost_nanos=cost,
                periods=periods,
            )
            steps.append((settle, granted.local if granted else False))
        await self._state.settle_all(steps)

    def _client_settle(
        self,
        used: Usage | None,
        cost: int | None,
        record: bytes | None,
        stored: Stored | None = None,
        periods: tuple[str, ...] = (),
        *,
        granted: Granted | None = None,
    ) -> list[tuple[Settle, bool]]:
        ask, granted = self.ask, granted or self.granted
        if record is None and granted is None:
            return []  # nothing was taken, nothing to give back
        tokens = used.total_tokens if used else 0
        settle = Settle(
            scope=ask.scope if ask else limits.client_scope(self.client.name if self.client else None),
            settlement_key=self.settlement_key,
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
        )
        return [(settle, granted.local if granted else False)]


def compact(data: bytes) -> bytes:
    """`data` in an allocation of its own size (see the record in Ticket.close)."""
    return bytes(memoryview(data))
