"""Hedged requests (routing.hedge): a slow first attempt raced by a second provider.

If the first attempt has no first token after `after`, a second starts on another provider
(if the hedge budget allows); whichever commits first wins, and the others are cancelled at
once and settled for what they used, as hedges. An attempt that fails while another still
runs is noted as any failed attempt is; the last one's error goes to the failover loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import metrics
from .attempt import Committed, Tally
from .errors import RouterError, UpstreamError
from .types import Usage

if TYPE_CHECKING:
    from .admission import Admission
    from .call import Call
    from .config import Target
    from .health import KeyUse
    from .outcome import Outcome, Started
    from .routing import Candidate
    from .types import JSON

HedgeLost = Callable[["Target", Usage], None]
"""Settles an attempt that a hedge race cancelled, for what it used."""


class Way(Protocol):
    """What a race needs of its request's way through the targets (proxy.Forwarding)."""

    call: Call
    admission: Admission
    answer_id: str
    hedges: int

    def choose(
        self, now: float, *, tried: Sequence[Target], busy: Collection[str] = ()
    ) -> Candidate | None: ...

    async def start(self, choice: Candidate) -> Started | None: ...

    async def failed(self, target: Target, error: UpstreamError) -> None: ...


class Host(Protocol):
    """What a race needs of the proxy that runs it: its attempts and its hedging rules."""

    @property
    def max_hedges(self) -> int: ...

    @property
    def max_attempts(self) -> int: ...

    def try_hedge(self) -> bool: ...

    async def attempt(
        self,
        call: Call,
        lease: KeyUse,
        upstream_body: JSON,
        deadline: float,
        tally: Tally,
        *,
        answer_id: str,
        prompt_tokens: int = 0,
        measure: bool = True,
    ) -> Outcome: ...


@dataclass(slots=True)
class _Racer:
    started: Started
    tally: Tally = field(default_factory=Tally)
    task: asyncio.Task[Outcome] | None = None


class Race:
    def __init__(
        self,
        proxy: Host,
        run: Way,
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
        failing: _Racer | None = None  # whose failure is being noted: if that raises, it ends the request
        running = [self._start(first)]
        hedge_at = loop.time() + self._after
        try:
            while running:
                hedging = self._may_hedge()
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
                    self._cancel(running, keep=None)
                    return await self._outcome(winner)
                for racer in [r for r in running if r.task in done]:
                    running.remove(racer)
                    assert racer.task is not None
                    error = racer.task.exception()
                    if not isinstance(error, UpstreamError):
                        raise error or AssertionError("an attempt that returns has committed")
                    failing = racer
                    await self._run.failed(racer.started.lease.target, error)
                    failing = None
                if not done and hedging:
                    hedge = await self._hedge(running)
                    if hedge is not None:
                        running.append(hedge)
                    hedge_at = loop.time() + self._after
            return None
        finally:
            # The request is settled for one attempt: the winner, the one whose error it ends
            # with, or (the client left) the one still running. Any other is a hedge's cost.
            answering = winner or failing or (running[0] if running else self._racers[-1])
            self._cancel(running, keep=answering)
            self._merge(answering, time.perf_counter() - began)

    async def _outcome(self, winner: _Racer) -> Outcome | None:
        assert winner.task is not None
        try:
            return await winner.task
        except UpstreamError as error:  # committed, then failed: noted as any failed attempt
            await self._run.failed(winner.started.lease.target, error)
            return None

    def _may_hedge(self) -> bool:
        """Another hedge is allowed: fewer than `max` for this request, and within max_attempts."""
        run = self._run
        return run.hedges < self._proxy.max_hedges and (
            self._tally.attempts + len(self._racers) < self._proxy.max_attempts
        )

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
        now = asyncio.get_running_loop().time()
        busy = {r.started.lease.target.provider.name for r in running}
        tried = [r.started.lease.target for r in self._racers]
        choice = run.choose(now, tried=tried, busy=busy)
        if choice is None or choice.not_before > now or choice.target in tried:
            return None  # nothing else ready now (a target that failed here is not hedged to)
        try:
            started = await run.start(choice)
        except RouterError:  # shared state refused the key's reservation: the first attempt goes on
            return None
        if started is None:
            return None
        if not self._proxy.try_hedge():  # the budget is spent: give back what was taken
            started.lease.end()
            await run.admission.release_key(started.lease.target)
            return None
        run.hedges += 1
        metrics.hedges_started(run.call.model).inc()
        return self._start(started)

    def _cancel(self, losers: list[_Racer], *, keep: _Racer | None) -> None:
        """Cancel attempts that lost (or whose request ended), and settle each but `keep` for
        what it used, as a hedge: at least its prompt, which the provider was sent."""
        for racer in losers:
            assert racer.task is not None
            racer.task.cancel()
            racer.task.add_done_callback(_abandon)
            if racer is keep or self._lost is None:
                continue
            relay = racer.tally.reading
            used = (
                relay.estimate() if relay is not None else Usage(self._run.admission.reserve.prompt_tokens, 0)
            )
            self._lost(racer.started.lease.target, used)
        losers.clear()

    def _merge(self, answering: _Racer, seconds: float) -> None:
        """The request's tally: every attempt counted, the answering one's timings."""
        tally = self._tally
        tally.attempts += sum(r.tally.attempts for r in self._racers)
        tally.upstream_wait += seconds
        tally.target = answering.tally.target
        tally.upstream_headers = answering.tally.upstream_headers
        tally.first_token = answering.tally.first_token
        tally.reading = answering.tally.reading


def _abandon(task: asyncio.Task[Outcome]) -> None:
    """A cancelled attempt's end. One that had already returned a stream (it committed in the
    same moment as the winner) still holds its connection and its key: let both go."""
    if task.cancelled() or task.exception() is not None:  # retrieved: a loser's error is not news
        return
    outcome = task.result()
    if isinstance(outcome.answer, Committed):
        outcome.answer.upstream.close()
        outcome.stream_ended("client_disconnected", None)
