"""Hedged requests (routing.hedge): a slow first attempt raced by a second provider.

If the first attempt has no first token after `after`, a second starts on another provider
(if the hedge budget allows); whichever commits first wins, and the others are cancelled at
once and settled for what they used, as hedges. An attempt that fails while another still
runs is noted as any failed attempt is; the last one's error goes to the failover loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import metrics
from .attempt import Tally
from .errors import UpstreamError
from .types import Usage

if TYPE_CHECKING:
    from .proxy import HedgeLost, Outcome, Proxy, Started, _Forwarding


@dataclass(slots=True)
class _Racer:
    started: Started
    tally: Tally = field(default_factory=Tally)
    task: asyncio.Task[Outcome] | None = None


class Race:
    def __init__(
        self,
        proxy: Proxy,
        run: _Forwarding,
        tally: Tally,
        deadline: float,
        *,
        after: float,
        lost: HedgeLost | None,
    ):
        self._proxy = proxy
        self._run = run
        self._tally = tally
        self._deadline = deadline
        self._after = after
        self._lost = lost
        self._racers: list[_Racer] = []
        """Every attempt started, in order: the first is the request's own, the rest hedges."""

    async def run(self, first: Started) -> Outcome | None:
        """The winner's outcome; None when every attempt failed (each failure is noted, and
        a final one, such as the client's own 400, is raised)."""
        loop = asyncio.get_running_loop()
        began = time.perf_counter()
        winner: _Racer | None = None
        running = [self._start(first)]
        hedge_at = loop.time() + self._after
        try:
            while running:
                hedging = len(self._racers) <= self._proxy.max_hedges
                waits: set[asyncio.Future[Any]] = set()
                for racer in running:
                    assert racer.task is not None and racer.tally.committed is not None
                    waits |= {racer.task, racer.tally.committed}
                timeout = max(0.0, hedge_at - loop.time()) if hedging else None
                done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                winner = next((r for r in running if r.tally.committed and r.tally.committed.done()), None)
                if winner is not None:
                    running.remove(winner)
                    if winner is not self._racers[0]:
                        metrics.hedges_won(self._run.call.model).inc()
                    self._cancel(running, settle_first=True)
                    assert winner.task is not None
                    return await winner.task
                for racer in [r for r in running if r.task in done]:
                    running.remove(racer)
                    assert racer.task is not None
                    error = racer.task.exception()
                    if not isinstance(error, UpstreamError):
                        raise error or AssertionError("an attempt that returns has committed")
                    await self._run.failed(racer.started.lease.target, error)
                if not done and hedging:
                    hedge = await self._hedge(running)
                    if hedge is not None:
                        running.append(hedge)
                    hedge_at = loop.time() + self._after
            return None
        finally:
            self._cancel(running, settle_first=False)  # the request's own attempt is the request's to settle
            self._merge(winner, time.perf_counter() - began)

    def _start(self, started: Started) -> _Racer:
        racer = _Racer(started)
        racer.tally.committed = asyncio.get_running_loop().create_future()
        run = self._run
        racer.task = asyncio.ensure_future(
            self._proxy.attempt(
                run.call,
                started.lease,
                started.body,
                self._deadline,
                racer.tally,
                answer_id=run.answer_id,
                prompt_tokens=run.admission.reserve.prompt_tokens,
            )
        )
        self._racers.append(racer)
        return racer

    async def _hedge(self, running: list[_Racer]) -> _Racer | None:
        """A hedge on a provider none of the running attempts uses, if the budget has one."""
        run = self._run
        busy = {r.started.lease.target.provider.name for r in running}
        tried = [r.started.lease.target for r in self._racers]
        choice = run.choose(asyncio.get_running_loop().time(), tried=tried, busy=busy)
        if choice is None or choice.not_before > asyncio.get_running_loop().time():
            return None
        if not self._proxy.try_hedge():
            return None
        started = await run.start(choice)
        if started is None:
            return None
        metrics.hedges_started(run.call.model).inc()
        return self._start(started)

    def _cancel(self, losers: list[_Racer], *, settle_first: bool) -> None:
        """Cancel attempts that lost (or whose request ended), and settle each for what it
        used, as a hedge: at least its prompt, which the provider was sent."""
        for racer in losers:
            assert racer.task is not None
            racer.task.cancel()
            racer.task.add_done_callback(_retrieved)
            if (racer is self._racers[0] and not settle_first) or self._lost is None:
                continue
            relay = racer.tally.reading
            used = (
                relay.estimate() if relay is not None else Usage(self._run.admission.reserve.prompt_tokens, 0)
            )
            self._lost(racer.started.lease.target, used)
        losers.clear()

    def _merge(self, winner: _Racer | None, seconds: float) -> None:
        """The request's tally: every attempt counted, the winner's (else the first's) timings."""
        tally = self._tally
        tally.attempts += sum(r.tally.attempts for r in self._racers)
        tally.upstream_wait += seconds
        answering = winner or self._racers[0]  # the first: what a client that left is settled for
        tally.target = answering.tally.target
        tally.upstream_headers = answering.tally.upstream_headers
        tally.first_token = answering.tally.first_token
        tally.reading = answering.tally.reading


def _retrieved(task: asyncio.Task[Outcome]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a cancelled loser's error is not news
