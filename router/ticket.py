"""One request's hold on shared state, from admission to settlement (SPEC §6).

The Ledger opens a Ticket when it admits a request. Each attempt reserves its provider key
through the ticket; whichever path ends the request (a whole answer, an error, a stream's
end, the client leaving, a cancellation) settles it, once: one store step per scope, run
concurrently, that releases the leases, reconciles TPM with the real usage, adds the usage
to the counters and appends the record to the client's ledger. A request that did no
upstream work settles nothing and lets its idempotency key go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from . import limits, logs, metrics
from .classify import Verdict
from .config import Client, Target
from .context import RequestContext
from .errors import RouterError, StateUnavailable, UpstreamStatusError
from .responses import BytesResponse, StreamResponse
from .state import Ask, Granted, GuardedStore, Limited, Settle, StateUnavailableError, Stored
from .types import JSON, Usage


class Ledger(Protocol):
    """What a ticket needs of the ledger that opened it (ledger.Ledger)."""

    state: GuardedStore

    def later(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

    def forget(self, settlement_key: str) -> None: ...


DEGRADED = (b"x-router-degraded", b"state")
STATE_RETRY = "2"
"""Retry-After while shared state is unavailable."""


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
        self.idempotency = idempotency
        self.settlement_key = ctx.settlement_key or ""
        self.granted: Granted | None = None
        self._keys: dict[Target, tuple[Ask, Granted]] = {}
        self.started_at = time.time()
        self.closed = False

    # -- how a request ends: each path settles once -------------------------------------

    async def answered(self, response: BytesResponse) -> None:
        """A whole answer, about to be sent."""
        stored = self._stored(200, stream=False, body=response.body)
        done = self.close(
            status=200, outcome="completed", usage=self.ctx.usage, estimated=self._guess(0), stored=stored
        )
        await asyncio.shield(self._ledger.later(done))

    async def failed(self, error: RouterError) -> None:
        """The request ends with `error`. A final answer that is the client's fault (a 400 from
        the provider) is kept for replay; one that a retry may fix is not (SPEC §8)."""
        keep = isinstance(error, UpstreamStatusError) and error.verdict == Verdict.CLIENT_FAULT
        stored = self._stored(error.http_status, stream=False, body=error.body()) if keep else None
        done = self.close(status=error.http_status, outcome="error", usage=None, stored=stored)
        await asyncio.shield(self._ledger.later(done))

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

    async def _stream_ended(self, response: StreamResponse) -> None:
        relay = response.relay
        stored = None
        if response.outcome == "completed" and response.sent is not None:
            stored = self._stored(200, stream=True, body=b"".join(response.sent))
        await self.close(
            status=200,
            outcome=response.outcome if response.outcome != "pending" else "client_disconnected",
            usage=relay.usage,
            estimated=self._guess(relay.answer_events),
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

    async def reserve_key(self, target: Target) -> KeyRefusal | None:
        """Reserve `target`'s key limits and quota for one attempt; a refusal names how long."""
        provider = target.provider
        ask = limits.ask(
            limits.key_scope(target),
            provider.limits,
            provider.quota,
            reserve=self.reserve,
            price=target.route.price,
            lease=f"{self.settlement_key}.{len(self._keys)}",
        )
        if ask is None:
            return None
        try:
            answer = await self._ledger.state.acquire(ask)
        except StateUnavailableError:  # on_failure: closed
            raise StateUnavailable(
                "Shared state is unavailable; retry shortly.", headers={"retry-after": STATE_RETRY}
            ) from None
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

    async def release_key(self, target: Target) -> None:
        """An attempt failed: give back its key's reservation (it used no tokens)."""
        held = self._keys.pop(target, None)
        if held is not None:
            ask, granted = held
            await self._ledger.state.settle(
                Settle(
                    scope=ask.scope,
                    settlement_key=f"{self.settlement_key}:{ask.lease}",
                    hold=granted.hold,
                    tpm=ask.tpm,
                    tpm_delta=-granted.tokens,
                ),
                local=granted.local,
            )

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
        state = self._ledger.state
        target = ctx.target if ctx.attempts else None
        if target is None:  # no upstream work: nothing is settled, the idempotency key goes free
            ctx.settlement_key = None
            steps = [self._client_settle(None, None, None)]
            steps += [self.release_key(t) for t in list(self._keys)]
            await asyncio.gather(*steps)
            return
        used = usage or estimated or Usage(0, 0)
        cost = limits.cost_nanos(used, target.route.price)
        ctx.tokens, ctx.outcome = used, outcome
        client_name = self.client.name if self.client else ""
        labels = (client_name, self.model, target.provider.name)
        metrics.TOKENS.labels(*labels, "prompt").inc(used.prompt_tokens)
        metrics.TOKENS.labels(*labels, "completion").inc(used.completion_tokens)
        if cost:
            metrics.COST.labels(*labels).inc(cost / 1e9)
        record = orjson.dumps(
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
        periods = limits.periods(self.started_at)
        steps = [self._client_settle(used, cost, record, stored, periods)]
        for t in list(self._keys):
            if t is not target:
                steps.append(self.release_key(t))
        held = self._keys.pop(target, None)
        if held is not None or used.total_tokens or cost:  # the key's quota and usage counters
            key_ask, granted = held if held is not None else (None, None)
            steps.append(
                state.settle(
                    Settle(
                        scope=limits.key_scope(target),
                        settlement_key=key,
                        hold=granted.hold if granted else None,
                        tpm=key_ask.tpm if key_ask else 0,
                        tpm_delta=used.total_tokens - (granted.tokens if granted else 0),
                        tokens=used.total_tokens,
                        cost_nanos=cost,
                        periods=periods,
                    ),
                    local=granted.local if granted else False,
                )
            )
        await asyncio.gather(*steps)

    async def _client_settle(
        self,
        used: Usage | None,
        cost: int | None,
        record: bytes | None,
        stored: Stored | None = None,
        periods: tuple[str, ...] = (),
    ) -> None:
        ask, granted = self.ask, self.granted
        if record is None and granted is None:
            return  # nothing was taken, nothing to give back
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
        await self._ledger.state.settle(settle, local=granted.local if granted else False)
