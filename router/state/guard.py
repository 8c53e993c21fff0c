"""What happens when the shared store is down or slow (DESIGN-NOTES "Redis down").

A breaker around the store: after an error it is not called again until a short, growing
pause has passed, so a dead Redis costs one socket timeout, not one per request. While it
is down (on_failure: local):
  - rate limits and concurrency fall back to this process, each limit divided by
    state.replicas, and answers are marked local (a `degraded` response header, /readyz);
  - a request with an idempotency key cannot be promised exactly-once, nor a client with a
    budget that it stays within it: StateUnavailable (503). Provider quotas are not checked;
  - releases that fail are dropped: leases and claims expire by themselves;
  - settlement records go to an outbox (outbox.py; with state.journal, also to a file, journal.py, that
    outlives the process), written once when the store is back (each record is applied once
    per settlement key, so a write whose reply was lost, or a replay, is not doubled).
With on_failure: closed every request that needs the store gets StateUnavailable instead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from .base import Answer, Ask, Granted, Intent, LateError, Settle, StateError, Store, Used
from .memory import MemoryStore
from .outbox import Outbox

log = logging.getLogger("router.state")

FLUSH_BATCH = 200
"""Settlements written per flush: a long outbox drains over several ticks, between renewals."""
PAUSE = (0.5, 8.0)
"""Seconds the breaker keeps the store unused after an error: starts here, doubles, capped."""


class StateUnavailableError(Exception):
    """The store is down and this request needs it (an idempotency key, or on_failure: closed)."""


class GuardedStore:
    def __init__(
        self,
        store: Store,
        *,
        replicas: int = 1,
        closed: bool = False,
        on_error: Callable[[str], None] = lambda op: None,
        clock: Callable[[], float] = time.monotonic,
        outbox: Outbox | None = None,
    ):
        self.store = store
        self.local = MemoryStore(lease_ttl=float("inf"))
        self._replicas = replicas
        self._closed = closed
        self._on_error = on_error
        self._clock = clock
        self._down_until = 0.0
        self._failed_at = -math.inf
        self._pause = 0.0
        self.outbox = outbox if outbox is not None else Outbox()
        """Shared with the store that replaces this one on a reload (one journal per process)."""

    @property
    def immediate(self) -> bool:
        """Every step completes without suspending: the store is in this process's memory."""
        return isinstance(self.store, MemoryStore)

    @property
    def sends_now(self) -> bool:
        return self._usable() and self.store.sends_now

    @property
    def degraded(self) -> bool:
        return self._pause > 0

    @property
    def refusing(self) -> bool:
        """on_failure: closed and the store is down: requests are refused, not served unsettled."""
        return self._closed and self.degraded

    async def acquire(self, ask: Ask) -> Answer:
        (answer,) = await self.acquire_all([ask])
        if isinstance(answer, StateUnavailableError):
            raise answer
        return answer

    async def acquire_all(self, asks: Sequence[Ask]) -> list[Answer | StateUnavailableError]:
        """acquire() for each ask, in one round trip to the store. Each ask the store does not
        answer falls back on its own: to local limits, or to its StateUnavailableError. The
        others keep what they were granted: giving it back is the caller's to do."""
        answers: list[Answer | StateError | None] = [None] * len(asks)
        if self._usable():
            started = self._clock()
            answers = list(await self.store.acquire_all(asks))
            self._judge("acquire", answers, started)
        found: list[Answer | StateUnavailableError] = []
        for ask, answer in zip(asks, answers, strict=True):
            if answer is not None and not isinstance(answer, StateError):
                found.append(answer)
                continue
            try:
                found.append(await self._acquire_locally(ask))
            except StateUnavailableError as error:
                found.append(error)
        return found

    async def _acquire_locally(self, ask: Ask) -> Answer:
        if self._closed or ask.claim is not None or (ask.budget and ask.has_allowance):
            # Exactly-once, or a client's money: this process alone cannot know what was spent.
            raise StateUnavailableError()
        answer = await self.local.acquire(self._scaled(ask))
        return replace(answer, local=True) if isinstance(answer, Granted) else answer

    async def settle(self, settle: Settle, *, local: bool) -> None:
        await self.settle_all([(settle, local)])

    async def settle_all(self, settles: Sequence[tuple[Settle, bool]]) -> None:
        """Settle each where its grant was made (`local` or not), the shared ones in one round
        trip; a record that cannot be written waits in the outbox."""
        shared = []
        for settle, local in settles:
            if not local:
                shared.append(settle)
                continue
            share = replace(settle, record=None, tpm=self._share(settle.tpm), rpm=self._share(settle.rpm))
            await self.local.settle(share)
            if settle.once:  # counters and ledger belong to the shared store
                self.outbox.append(replace(settle, hold=None, tpm=0, tpm_delta=0, rpm=0, claim_key=None))
        if not shared:
            return
        if self._usable():  # records need no order: each is applied once, whenever it arrives
            started = self._clock()
            done = await self.store.settle_all(shared)
            self._judge("settle", done, started)
            shared = [s for s, result in zip(shared, done, strict=True) if isinstance(result, StateError)]
        # Anything that is not once only frees leases and claims, which expire anyway.
        self.outbox.extend(s for s in shared if s.once)

    async def renew(
        self,
        scope: str,
        holds: Sequence[str],
        claims: Sequence[tuple[str, str]],
        intents: Sequence[tuple[str, int]] = (),
    ) -> None:
        if self._usable():
            try:
                await self.store.renew(scope, holds, claims, intents)
            except StateError as error:
                self._failed("renew", error)
            else:
                self._succeeded()

    async def recover(self, scope: str, *, grace: float, limit: int) -> list[Intent]:
        """Intents of dead replicas' requests (Store.recover); none while the store is down."""
        if not self._usable():
            return []
        try:
            found = await self.store.recover(scope, grace=grace, limit=limit)
        except StateError as error:
            self._failed("recover", error)
            return []
        self._succeeded()
        return found

    async def flush(self, *, at_most: int = FLUSH_BATCH, force: bool = False) -> int:
        """Write the outbox to the store, oldest first; stops at the first error. Returns how many.
        `force`: try even while the breaker pauses (shutdown: the last chance to write them)."""
        written = 0
        async with self.outbox.flushing:
            while self.outbox and (force or self._usable()) and written < at_most:
                try:
                    await self.store.settle(self.outbox.head)
                except StateError as error:
                    self._failed("flush", error)
                    break
                self._succeeded()
                self.outbox.popleft()
                written += 1
        if written:
            log.info("state: wrote %d settlement(s) from the outbox", written)
        return written

    async def check(self) -> None:
        """Probe a store marked down, so it is marked back up without waiting for traffic."""
        if self.degraded and self._usable():
            try:
                await self.store.ping()
            except StateError as error:
                self._failed("ping", error)
            else:
                self._succeeded()

    async def usage(self, scope: str, periods: Sequence[str]) -> dict[str, Used]:
        try:
            return await self.store.usage(scope, periods)
        except StateError as error:
            self._failed("usage", error)
            raise StateUnavailableError() from None

    async def records(self, scope: str, *, since: float = 0.0) -> list[bytes]:
        return await self.store.records(scope, since=since)

    def _usable(self) -> bool:
        return self._clock() >= self._down_until

    def _judge(self, op: str, results: Sequence[object], started: float) -> None:
        """One batch is one call to the store: one error, or one success, for the breaker. A
        step run late (LateError) fails its own request, but the store answered: it is up."""
        errors = [r for r in results if isinstance(r, StateError)]
        down = next((e for e in errors if not isinstance(e, LateError)), None)
        if down is not None:
            self._failed(op, down, started)
            return
        for _ in errors:
            self._on_error(op)
        self._succeeded()

    def _failed(self, op: str, error: StateError, started: float | None = None) -> None:
        self._on_error(op)
        if started is not None and started < self._failed_at:
            # Made before the last failure was known: the same outage seen by calls that
            # were in flight together, not a longer one.
            return
        self._failed_at = self._clock()
        if not self.degraded:
            log.warning(
                "state: store unreachable (%s); %s", error, "refusing" if self._closed else "local limits"
            )
        self._pause = min(PAUSE[1], self._pause * 2) if self._pause else PAUSE[0]
        self._down_until = self._clock() + self._pause

    def _succeeded(self) -> None:
        if self.degraded:
            log.warning("state: store reachable again; %d settlement(s) in the outbox", len(self.outbox))
        self._pause = 0.0

    def _share(self, limit: int) -> int:
        return max(1, math.floor(limit / self._replicas)) if limit > 0 else limit

    def _scaled(self, ask: Ask) -> Ask:
        """This replica's share of each limit. A provider key's quota is not checked: what was
        spent is in the store, and the provider enforces its own quota (402 marks it exhausted)."""
        return replace(
            ask,
            rpm=self._share(ask.rpm),
            tpm=self._share(ask.tpm),
            concurrency=self._share(ask.concurrency),
            allowance_tokens=-1,
            allowance_nanos=-1,
        )
