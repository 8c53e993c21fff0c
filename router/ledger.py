"""Settlement and idempotency (SPEC §6): every finished request settled exactly once.

A request opens a Ticket (ticket.py) before it goes upstream, with what its client's scope
must grant: one store step that takes the idempotency key (or answers 409, 422 or the stored
replay), checks and reserves the client's limits and budget, all or nothing. The ticket sends
it with the first attempt's provider key step, in one round trip. It settles the request
once when it ends, in the same script that adds its usage to the counters, so counters
always equal the sum of records.

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
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from . import limits
from .config import Allowance, Client, Config, Limits, Target
from .context import RequestContext
from .errors import InvalidRequest, StateUnavailable
from .refusals import STATE_RETRY
from .state import Claim, GuardedStore, open_store
from .ticket import Ticket
from .types import JSON

log = logging.getLogger("router.ledger")

IDEMPOTENCY_HEADERS = (b"x-idempotency-key", b"idempotency-key")
_IDEMPOTENCY_KEY = re.compile(rb"^[\x20-\x7e]{1,255}\Z")
RENEW_EVERY = 10.0
"""Seconds between lease renewals; leases live 30 s, so two renewals may be missed."""
TICK = 1.0
"""Seconds between checks of a store marked down, and outbox flushes."""
NO_LIMITS = Limits()
RENEW_FOR_AT_MOST = 60.0
"""Seconds past the request deadline after which a ticket that never closed (a bug) stops
being renewed: its leases and claim then expire instead of holding forever."""


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


class Ledger:
    def __init__(self, config: Config, state: GuardedStore):
        self.config = config
        self.state = state
        self._open: dict[str, Ticket] = {}
        self._background: set[asyncio.Task[None]] = set()

    def open(
        self,
        ctx: RequestContext,
        client: Client | None,
        body: JSON,
        raw: bytes,
        targets: Sequence[Target],
        idempotency: str | None,
    ) -> Ticket:
        """A Ticket for the request of `client`, holding what its scope must grant. Nothing is
        asked of the store yet: the first attempt asks (ticket.py), so a refusal or a replay
        is raised from there."""
        if self.state.refusing:
            raise StateUnavailable(
                "Shared state is unavailable, so this request cannot be settled exactly once; retry shortly.",
                headers={"retry-after": STATE_RETRY},
            )
        settlement_key = "stl_" + os.urandom(12).hex()
        ctx.settlement_key = settlement_key
        reserve = limits.estimate(body, len(raw))
        budget = client.budget if client else None
        # A cost budget reserves at the dearest target's price; nothing else needs a price.
        price = limits.dearest(targets) if budget is not None and budget.cost is not None else None
        claim = None
        if idempotency is not None:
            claim = Claim(idempotency, hashlib.sha256(raw).hexdigest()[:32], settlement_key)
        ask = limits.ask(
            limits.client_scope(client.name if client else None),
            client.limits if client else NO_LIMITS,
            budget,
            reserve=reserve,
            price=price,
            lease=settlement_key,
            claim=claim,
            budget=True,
            n=limits.choices(body),
        )
        ticket = Ticket(self, ctx, client, body, reserve, ask, idempotency)
        self._open[settlement_key] = ticket  # renewed once it holds leases; forgotten when it ends
        return ticket

    @property
    def in_flight(self) -> int:
        """Requests opened and not yet settled (admitted, or about to be on their first attempt)."""
        return len(self._open)

    def forget(self, settlement_key: str) -> None:
        self._open.pop(settlement_key, None)

    async def settle_now(self, work: Coroutine[Any, Any, None]) -> None:
        """Await a settlement that a cancellation must not cut short.

        A memory store's steps never suspend (memory.py), so nothing can interrupt them: the
        settlement is awaited directly, without the task and shield that cost a loop iteration
        per request. Any other store's runs as a tracked task, shielded."""
        if self.state.immediate:
            await work
        else:
            await asyncio.shield(self.later(work))

    async def start(self, work: Coroutine[Any, Any, None]) -> Awaitable[None]:
        """Start a settlement, return once its first step has run, with what to await for the
        rest. With a store that sends_now that step writes its round trip, so the answer the
        request sends next leaves after it: a client that reads its usage once answered finds
        it, and its next request finds the lease released. Only the reply is left to wait for,
        and not by the client."""
        task = self.later(work)
        await asyncio.sleep(0)  # one loop iteration: the task's first step, up to its reply
        return asyncio.shield(task)

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
            while self.state.outbox and await self.state.flush(force=True):
                pass  # all of it, in batches, until it is empty or the store fails again
        if self.state.outbox:
            log.error("state: %d settlement record(s) could not be written", len(self.state.outbox))

    async def usage(self) -> JSON:
        """GET /admin/usage: this period's spend per client and per provider key."""
        day, month, _ = limits.periods()
        wanted = (day, month, "total")
        clients = {}
        for client in self.config.clients or (None,):
            used = await self.state.usage(limits.client_scope(client.name if client else None), wanted)
            budget = client.budget if client else None
            clients[client.name if client else limits.ANONYMOUS] = _usage_row(used, budget)
        providers: dict[str, JSON] = {}
        keys = {t.name: t for targets in self.config.targets.values() for t in targets}
        for target in keys.values():
            used = await self.state.usage(limits.key_scope(target), wanted)
            row = _usage_row(used, target.provider.quota)
            providers.setdefault(target.provider.name, {})[target.key.name] = row
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
            records = await store.records(limits.client_scope(name), since=since)
            found += [orjson.loads(r) for r in records]
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
