"""Settlement and idempotency (SPEC §6): every finished request settled exactly once.

A request is admitted (admission.py) before it goes upstream, with what its client's scope
must grant: one store step that takes the idempotency key (or answers 409, 422 or the stored
replay), checks and reserves the client's limits and budget, all or nothing, sent with the
first attempt's provider key step in one round trip. Its settlement (settlement.py) settles
it once when it ends, in the same script that adds its usage to the counters, so counters
always equal the sum of records.

A request that fails before any upstream work settles nothing and lets its key go, so a
retry runs fresh. Records that cannot be written while the store is down wait in the
guard's outbox. In-flight leases and claims are renewed by `keep()`; a replica that dies
stops renewing, and its slots come back when they expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Coroutine, Mapping
from datetime import datetime
from typing import Any, Protocol

import orjson

from . import limits, recovery
from .config import Allowance, Config
from .errors import InvalidRequest
from .state import Ask, Granted, GuardedStore, Used, open_store
from .steps import UNCOUNTED
from .types import JSON

log = logging.getLogger("router.ledger")

IDEMPOTENCY_HEADERS = (b"x-idempotency-key", b"idempotency-key")
_IDEMPOTENCY_KEY = re.compile(rb"^[\x20-\x7e]{1,255}\Z")
TICK = 1.0
"""Seconds between checks of a store marked down, and outbox flushes."""
RENEW_FOR_AT_MOST = 60.0
"""Seconds past the request deadline after which a request that was never settled (a bug) stops
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


class Settling:
    """A settlement under way. The store says what it can do: a step that never suspends
    (memory) runs in the caller's own task; one that writes its round trip at once (a single
    Redis, ready) lets the answer leave after the write and before the reply; any other is
    awaited whole before the answer. One that nobody awaits (the client left) still runs to
    its end, and shutdown waits for it."""

    __slots__ = ("_inline", "_ledger", "_task", "_written_first")

    def __init__(self, ledger: Ledger, work: Coroutine[Any, Any, None] | None):
        self._ledger = ledger
        self._inline = work if ledger.state.immediate else None
        self._task = None if work is None or self._inline is not None else ledger.track(work)
        self._written_first = ledger.state.sends_now

    async def written(self) -> None:
        """Return once what the answer must follow has been done: the client that reads its
        usage once answered finds it, and its next request finds the lease released."""
        if self._inline is not None:
            work, self._inline = self._inline, None
            await work
        elif self._task is not None:
            if self._written_first:
                await asyncio.sleep(0)  # one loop iteration: the task's first step, up to its reply
            else:
                await asyncio.shield(self._task)

    async def done(self) -> None:
        """Return once the settlement has finished (shielded: a cancellation leaves it running)."""
        await self.written()
        if self._task is not None:
            await asyncio.shield(self._task)

    def rest(self) -> Awaitable[None] | None:
        """After written(): what is left to wait for (the reply), as a future that is harmless
        never to await (a response that is never sent), or None."""
        if self._task is None or self._task.done():
            return None
        return asyncio.shield(self._task)

    def detach(self) -> None:
        """Nobody will await it: it runs as a task of its own."""
        if self._inline is not None:
            work, self._inline = self._inline, None
            self._task = self._ledger.track(work)


class Upkeep:
    """When the keeper renews what this process holds and sweeps for dead replicas' requests:
    a schedule over the clock and the store's state, nothing else (so it is tested alone).

    Renewals come every third of a lease (two may be missed before one ends), and at once when
    the store comes back. A sweep waits a lease after this process starts, and after the
    store was last seen down: every replica renews first what it still holds or still has to
    settle, so only what a dead one left is due by then."""

    def __init__(self, lease: float, now: float):
        self.lease = lease
        self.every = lease / 3
        self._renewed = self._swept = now
        self._sweep_after = now + lease
        self._was_down = False

    def due(self, now: float, *, down: bool) -> tuple[bool, bool]:
        """(renew, sweep) for a tick at `now`, the store `down` or not."""
        if down:
            self._sweep_after = now + self.lease
        renew = (self._was_down and not down) or now - self._renewed >= self.every
        if renew:
            self._renewed = now
        self._was_down = down
        sweep = not down and now >= self._sweep_after and now - self._swept >= self.every
        if sweep:
            self._swept = now
        return renew, sweep


class Held(Protocol):
    """What a request in flight holds, as the keeper renews it (admission.Admission)."""

    started_at: float

    def grants(self) -> list[tuple[Ask, Granted]]: ...

    def relayed(self) -> int:
        """Completion tokens relayed to the client so far; -1 before any (or unknown)."""
        ...


class Ledger:
    def __init__(self, config: Config, state: GuardedStore):
        self.config = config
        self.state = state
        self._open: dict[str, Held] = {}
        self._background: set[asyncio.Task[None]] = set()

    def hold(self, settlement_key: str, held: Held) -> None:
        """Renew what `held` holds until it is settled (or refused): forget(settlement_key)."""
        self._open[settlement_key] = held

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet settled."""
        return len(self._open)

    def forget(self, settlement_key: str) -> None:
        self._open.pop(settlement_key, None)

    def finish(self, work: Coroutine[Any, Any, None] | None) -> Settling:
        """Start settling (`work`: the store's steps; None when there is nothing to write)."""
        return Settling(self, work)

    def track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run store work as a task of its own, tracked so shutdown waits for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def keep(self) -> None:
        """Flush the outbox; renew in-flight leases, claims and intents; probe a store marked
        down; settle dead replicas' requests (recovery.py), as Upkeep schedules them."""
        schedule = Upkeep(self.config.state.lease_ttl, time.monotonic())
        while True:
            await asyncio.sleep(min(TICK, schedule.every))
            try:
                await self.state.check()
                renew, sweep = schedule.due(time.monotonic(), down=self.state.degraded)
                if self.state.outbox:
                    # Before any sweep: what this process settled during an outage ends its
                    # intents itself, with its real usage.
                    await self.state.flush()
                if renew:
                    await self._renew()
                if sweep and not self.state.immediate:
                    await recovery.sweep(self.config, self.state)
            except Exception:  # the keeper must outlive any one failure
                log.exception("state: keeper step failed")

    async def _renew(self) -> None:
        holds: dict[str, list[str]] = {}
        claims: dict[str, list[tuple[str, str]]] = {}
        intents: dict[str, list[tuple[str, int]]] = {}
        too_old = time.time() - self.config.routing.timeouts.total - RENEW_FOR_AT_MOST
        for key, admission in list(self._open.items()):
            if admission.started_at < too_old:
                log.error("state: settlement %s never happened; its leases will expire", key)
                del self._open[key]
                continue
            for ask, granted in admission.grants():
                if ask.intent is not None:  # a local grant's too: its acquire may have run after all
                    intents.setdefault(ask.scope, []).append((key, admission.relayed()))
                if granted.local:
                    continue
                if granted.hold is not None:
                    holds.setdefault(ask.scope, []).append(granted.hold)
                if ask.claim is not None:
                    claims.setdefault(ask.scope, []).append((ask.claim.key, ask.claim.owner))
        for settle in self.state.outbox:  # settled here, not yet written: not lost
            if settle.intent:
                intents.setdefault(settle.scope, []).append((settle.settlement_key, -1))
        for scope in holds.keys() | claims.keys() | intents.keys():
            await self.state.renew(scope, holds.get(scope, []), claims.get(scope, []), intents.get(scope, []))

    async def aclose(self, grace: float = 5.0) -> None:
        """Wait (bounded) for background settlements, then try the outbox once more; what is
        left stays in the journal (fsynced), for the next start to replay."""
        if self._background:
            await asyncio.wait(self._background, timeout=grace)
        with contextlib.suppress(Exception):
            while self.state.outbox and await self.state.flush(force=True):
                pass  # all of it, in batches, until it is empty or the store fails again
        outbox = self.state.outbox
        if not outbox:
            return
        await outbox.sync()
        if outbox.path is not None:
            log.warning(
                "state: %d settlement(s) kept in the journal %s until the store answers (replayed at start)",
                len(outbox),
                outbox.path,
            )
        else:
            log.error("state: %d settlement record(s) lost: not written, and no state.journal", len(outbox))

    async def usage(self) -> JSON:
        """GET /admin/usage: this period's spend per client (also by API endpoint) and per
        provider key."""
        day, month, _ = limits.periods()
        wanted = (day, month, "total")
        clients = {}
        for client in self.config.clients or (None,):
            used = await self.state.usage(limits.client_scope(client.name if client else None), wanted)
            budget = client.budget if client else None
            row = _usage_row(used, budget)
            row["by_endpoint"] = _by_endpoint(used)
            clients[client.name if client else limits.ANONYMOUS] = row
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


def _by_endpoint(used: Mapping[str, Used]) -> JSON:
    """A client's usage by API endpoint, each shaped as its row: {endpoint: {day, month, total}}.
    Chat's is not counted apart (steps.UNCOUNTED): it is the client's total less the others',
    so it also holds what was settled before endpoints were counted apart."""
    periods = dict(zip(("day", "month", "total"), used.values(), strict=True))
    names = sorted({name for u in periods.values() for name in u.by_endpoint} | {UNCOUNTED})
    found: JSON = {}
    for name in names:
        row = found[name] = {}
        for period, u in periods.items():
            if name == UNCOUNTED:
                others = [v for k, v in u.by_endpoint.items() if k != UNCOUNTED]
                tokens = u.tokens - sum(t for t, _ in others)
                nanos = u.cost_nanos - sum(n for _, n in others)
            else:
                tokens, nanos = u.by_endpoint.get(name, (0, 0))
            row[period] = {"tokens": tokens, "cost": nanos / 1e9}
    return found


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
