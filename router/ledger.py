"""Settlement and idempotency (SPEC §6): every finished request settled exactly once.

A request opens a Ticket before it goes upstream: one store step for the client's scope
takes the idempotency key (or answers 409, 422 or the stored replay), checks and reserves
the client's limits and budget, all or nothing. Each attempt reserves its provider key's
limits and quota. When the request ends, one step per scope (run concurrently) releases the
leases, reconciles TPM with real usage, adds usage to the counters and appends the record
to the client's ledger — in the same script, so counters always equal the sum of records.

A request that fails before any upstream work settles nothing and lets its key go, so a
retry runs fresh. Records that cannot be written while the store is down wait in the
guard's outbox. In-flight leases and claims are renewed by `keep()`; a replica that dies
stops renewing, and its slots come back when they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from . import limits, metrics
from .classify import Verdict
from .config import Allowance, Client, Config, Limits, Target
from .context import RequestContext
from .errors import (
    IdempotencyConflict,
    IdempotencyKeyReused,
    InvalidRequest,
    RouterError,
    StateUnavailable,
    UpstreamStatusError,
)
from .responses import SSE_HEADERS, BytesResponse, StreamResponse
from .state import (
    Ask,
    Claim,
    Conflict,
    Granted,
    GuardedStore,
    Limited,
    Replay,
    Reused,
    Settle,
    Spent,
    StateUnavailableError,
    Stored,
    open_store,
)
from .types import JSON, Usage

log = logging.getLogger("router.ledger")

IDEMPOTENCY_HEADERS = (b"x-idempotency-key", b"idempotency-key")
_IDEMPOTENCY_KEY = re.compile(rb"^[\x20-\x7e]{1,255}$")
RENEW_EVERY = 10.0
"""Seconds between lease renewals; leases live 30 s, so two renewals may be missed."""
TICK = 1.0
"""Seconds between checks of a store marked down, and outbox flushes."""
NO_LIMITS = Limits()
DEGRADED = (b"x-router-degraded", b"state")
RENEW_FOR_AT_MOST = 60.0
"""Seconds past the request deadline after which a ticket that never closed (a bug) stops
being renewed: its leases and claim then expire instead of holding forever."""
CONFLICT_RETRY = "1"
STATE_RETRY = "2"


def idempotency_key(headers: Mapping[bytes, bytes]) -> str | None:
    for name in IDEMPOTENCY_HEADERS:
        value = headers.get(name)
        if value is not None:
            if not _IDEMPOTENCY_KEY.match(value):
                raise InvalidRequest(
                    "The idempotency key must be 1 to 255 printable ASCII characters.", param=name.decode()
                )
            return value.decode("ascii")
    return None


@dataclass(frozen=True, slots=True)
class KeyRefusal:
    """A provider key that cannot take this request now: for `wait` seconds, or until its quota rolls."""

    wait: float
    quota: bool
    remember: bool = True
    """Skip the key in other requests too until `wait` has passed."""


class Ledger:
    def __init__(self, config: Config, state: GuardedStore):
        self.config = config
        self.state = state
        self._open: dict[str, Ticket] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def open(
        self,
        ctx: RequestContext,
        client: Client | None,
        body: JSON,
        raw: bytes,
        targets: Sequence[Target],
        idempotency: str | None,
    ) -> Ticket | BytesResponse:
        """Admit the request for `client`: a Ticket to settle later, or the stored replay."""
        settlement_key = "stl_" + os.urandom(12).hex()
        ctx.settlement_key = settlement_key
        reserve = limits.estimate(body, len(raw))
        claim = None
        if idempotency is not None:
            claim = Claim(idempotency, hashlib.sha256(raw).hexdigest()[:32], settlement_key)
        ask = limits.ask(
            limits.client_scope(client),
            client.limits if client else NO_LIMITS,
            client.budget if client else None,
            reserve=reserve,
            price=limits.dearest(targets),
            lease=settlement_key,
            claim=claim,
            budget=True,
        )
        ticket = Ticket(self, ctx, client, body, raw, reserve, ask, idempotency)
        try:
            if self.state.refusing:
                raise StateUnavailableError()
            if ask is None:
                self._open[settlement_key] = ticket  # its provider keys may hold leases to renew
                return ticket
            answer = await self.state.acquire(ask)
        except StateUnavailableError:
            ctx.settlement_key = None
            raise StateUnavailable(
                "Shared state is unavailable, so this request cannot be settled exactly once; retry shortly.",
                headers={"retry-after": STATE_RETRY},
            ) from None
        if isinstance(answer, Granted):
            ticket.granted = answer
            if answer.local:
                ctx.headers.append(DEGRADED)
            if client is not None:
                ctx.headers += limits.limit_headers(client.limits, answer.window)
            self._open[settlement_key] = ticket
            return ticket
        ctx.settlement_key = None  # nothing will be settled
        if isinstance(answer, Replay):
            metrics.REPLAYS.inc()
            ctx.outcome, ctx.settlement_key = "replayed", answer.stored.settlement_key
            return replay(answer.stored)
        scope_name = client.name if client else limits.ANONYMOUS
        if isinstance(answer, Limited):
            metrics.RATE_LIMITED.labels("client", scope_name, answer.limit).inc()
            raise limits.client_refused(client, answer)
        if isinstance(answer, Spent):
            metrics.RATE_LIMITED.labels("client", scope_name, "budget").inc()
            raise limits.budget_spent(client)
        if isinstance(answer, Conflict):
            raise IdempotencyConflict(
                "A request with this idempotency key is still in progress; retry after it finishes.",
                headers={"retry-after": CONFLICT_RETRY},
            )
        assert isinstance(answer, Reused)
        raise IdempotencyKeyReused(
            "This idempotency key was already used with a different request body.", param="X-Idempotency-Key"
        )

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet settled."""
        return len(self._open)

    def forget(self, settlement_key: str) -> None:
        self._open.pop(settlement_key, None)

    def later(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a settlement as a task of its own, tracked so shutdown waits for it: awaited
        (shielded) on the normal path, left to finish when the client left or was cancelled."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def keep(self) -> None:
        """Renew in-flight leases and claims; probe a store marked down; flush the outbox."""
        last_renewal = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            try:
                if time.monotonic() - last_renewal >= RENEW_EVERY:
                    last_renewal = time.monotonic()
                    await self._renew()
                await self.state.check()
                if self.state.outbox:
                    await self.state.flush()
            except Exception:  # the keeper must outlive any one failure
                log.exception("state: keeper step failed")

    async def _renew(self) -> None:
        holds: dict[str, list[str]] = {}
        claims: dict[str, list[tuple[str, str]]] = {}
        too_old = time.time() - self.config.routing.timeouts.total - RENEW_FOR_AT_MOST
        for key, ticket in list(self._open.items()):
            if ticket.started_at < too_old:
                log.error(
                    "state: request %s was never settled; its leases will expire", ticket.ctx.request_id
                )
                del self._open[key]
                continue
            for ask, granted in ticket.grants():
                if granted.local:
                    continue
                if granted.hold is not None:
                    holds.setdefault(ask.scope, []).append(granted.hold)
                if ask.claim is not None:
                    claims.setdefault(ask.scope, []).append((ask.claim.key, ask.claim.owner))
        for scope in holds.keys() | claims.keys():
            await self.state.renew(scope, holds.get(scope, []), claims.get(scope, []))

    async def aclose(self, grace: float = 5.0) -> None:
        """Wait (bounded) for background settlements, then try the outbox once more."""
        if self._background:
            await asyncio.wait(self._background, timeout=grace)
        with contextlib.suppress(Exception):
            while self.state.outbox and await self.state.flush():
                pass  # all of it, in batches, until it is empty or the store fails again
        if self.state.outbox:
            log.error("state: %d settlement record(s) could not be written", len(self.state.outbox))

    async def usage(self) -> JSON:
        """GET /admin/usage: this period's spend per client and per provider key."""
        day, month, _ = limits.periods()
        wanted = (day, month, "total")
        clients = {}
        for client in self.config.clients or (None,):
            used = await self.state.usage(limits.client_scope(client), wanted)
            budget = client.budget if client else None
            clients[client.name if client else limits.ANONYMOUS] = _usage_row(used, budget)
        providers: dict[str, JSON] = {}
        for provider in self.config.providers.values():
            for key in provider.keys:
                scope = f"p:{provider.name}/{key.name}"
                used = await self.state.usage(scope, wanted)
                providers.setdefault(provider.name, {})[key.name] = _usage_row(used, provider.quota)
        return {"periods": {"day": day, "month": month}, "clients": clients, "providers": providers}


async def read(config: Config, *, client: str | None = None, since: float = 0.0) -> list[JSON]:
    """Settlement records, oldest first (`router ledger`). With memory state they come from
    `state.ledger_file`, the only place they outlive the serving process."""
    names = [client] if client else [c.name for c in config.clients] or [limits.ANONYMOUS]
    if config.state.url.startswith("memory://"):
        path = config.state.ledger_file
        if path is None:
            raise FileNotFoundError(
                "state.url is memory:// and state.ledger_file is not set: the records lived in the "
                "serving process only. Set state.ledger_file (or use Redis) to keep them."
            )
        found = []
        with open(path, "rb") as lines:
            for line in lines:
                if line.strip():
                    record = orjson.loads(line)
                    owner = record.get("client") or limits.ANONYMOUS
                    if owner in names and _epoch(record["started_at"]) >= since:
                        found.append(record)
        return found
    store = open_store(config.state).store
    try:
        found = []
        for name in names:
            scope = "c:" + name
            found += [orjson.loads(r) for r in await store.records(scope, since=since)]
    finally:
        await store.aclose()
    return sorted(found, key=lambda r: r["started_at"])


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _usage_row(used: Mapping[str, object], allowance: Allowance | None) -> JSON:
    day, month, total = (used[p] for p in used)
    row: JSON = {
        name: {"tokens": u.tokens, "cost": u.cost_nanos / 1e9}  # type: ignore[attr-defined]
        for name, u in (("day", day), ("month", month), ("total", total))
    }
    if allowance is not None:
        spent = row[allowance.per]
        limit = allowance.tokens if allowance.tokens is not None else allowance.cost
        field = "tokens" if allowance.tokens is not None else "cost"
        row["limit"] = {"per": allowance.per, field: limit, "remaining": max(0, limit - spent[field])}
    return row


def replay(stored: Stored) -> BytesResponse:
    headers = [(b"x-settlement-key", stored.settlement_key.encode()), (b"idempotent-replayed", b"true")]
    if stored.stream:
        return BytesResponse(
            stored.body,
            status=stored.status,
            headers=[*SSE_HEADERS[1:], *headers],
            media_type=SSE_HEADERS[0][1],
        )
    return BytesResponse(stored.body, status=stored.status, headers=headers)


class Ticket:
    """One request's hold on shared state, from admission to settlement."""

    def __init__(
        self,
        ledger: Ledger,
        ctx: RequestContext,
        client: Client | None,
        body: JSON,
        raw: bytes,
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
        key_name = f"{provider.name}/{target.key.name}"
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
                "started_at": _iso(self.started_at),
                "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            }
        )
        steps = [self._client_settle(used, cost, record, stored)]
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
                        periods=limits.periods(self.started_at),
                    ),
                    local=granted.local if granted else False,
                )
            )
        await asyncio.gather(*steps)

    async def _client_settle(
        self, used: Usage | None, cost: int | None, record: bytes | None, stored: Stored | None = None
    ) -> None:
        ask, granted = self.ask, self.granted
        if record is None and granted is None:
            return  # nothing was taken, nothing to give back
        tokens = used.total_tokens if used else 0
        settle = Settle(
            scope=ask.scope if ask else limits.client_scope(self.client),
            settlement_key=self.settlement_key,
            hold=granted.hold if granted else None,
            tpm=ask.tpm if ask else 0,
            tpm_delta=tokens - (granted.tokens if granted else 0),
            tokens=tokens,
            cost_nanos=cost or 0,
            periods=limits.periods(self.started_at) if record is not None else (),
            record=record,
            claim_key=ask.claim.key if ask and ask.claim else None,
            claim_hash=ask.claim.body_hash if ask and ask.claim else "",
            stored=stored,
        )
        await self._ledger.state.settle(settle, local=granted.local if granted else False)


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
