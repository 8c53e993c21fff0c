"""Forward one request: plan the targets, and attempt them until one answers.

Every attempt translates from the client's original body. A failure that another attempt
may fix moves on to the next planned target, after a jittered backoff, within one total
deadline and the retry budget; one that it cannot (the client's own 4xx) is the answer.
A target that timed out, has no channel for the model, refused our key or is out of quota
is not tried again in the same request; one that only errored may be, if nothing else is
left. Waiting for a rate-limited provider's Retry-After happens only when it fits the
deadline.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING

from . import failover, metrics, routing, translate
from .attempt import Committed, Sender, Tally
from .call import Call
from .classify import Verdict
from .config import Config, Target
from .errors import ParamNotAllowed, UpstreamError, UpstreamTimeout
from .health import Health, KeyUse, Status, key_id
from .outcome import Outcome, Started
from .race import HedgeLost, Race
from .types import JSON
from .upstream import Upstream

if TYPE_CHECKING:
    from .admission import Admission

_CONVERSATION = re.compile(rb"^[\x21-\x7e]{1,256}\Z")
# Failures after which this request leaves the target alone: a silent target costs one
# timeout, not three; a key without the model, or refused, or out of quota stays so.
_LEAVE_ALONE = frozenset({Verdict.NOT_SERVED, Verdict.KEY_REJECTED, Verdict.QUOTA_EXHAUSTED})


class Proxy:
    def __init__(
        self,
        config: Config,
        upstream: Upstream,
        health: Health,
        *,
        budget: failover.RetryBudget | None = None,
        rng: random.Random | None = None,
    ):
        self._sender = Sender(config, upstream)
        self._health = health
        self._budget = budget or failover.RetryBudget()
        self._rng = rng or random.Random()
        self._strategy = routing.STRATEGIES[config.routing.strategy]
        self._sticky = config.routing.sticky == "conversation"
        self._max_attempts = config.routing.max_attempts
        self._hedge = config.routing.hedge
        self._hedge_budget = (
            failover.RetryBudget(ratio=self._hedge.budget, floor=1) if self._hedge is not None else None
        )
        self._limited: dict[Target, tuple[float, bool]] = {}
        """Keys at their providers.yaml limit (until when, and whether it is the quota), as the
        shared store last said: skipped without asking again. Never waited for: SPEC §8."""

    async def forward(
        self,
        call: Call,
        admission: Admission,
        tally: Tally,
        deadline: float,
        *,
        hedge_lost: HedgeLost | None = None,
    ) -> Outcome:
        """Attempt the planned targets until one answers, by `deadline` (loop time); raises
        the error to answer with. `hedge_lost` settles an attempt a hedge race cancelled."""
        loop = asyncio.get_running_loop()
        run = Forwarding(self, call, admission)
        hedge_after = self._hedge_after(call)
        self._budget.request()
        while tally.attempts < self._max_attempts:
            now = loop.time()
            choice = run.choose(now, tried=run.tried)
            if choice is None:
                break
            wait = choice.not_before - now
            if tally.attempts:
                if not self._budget.try_retry():
                    break  # retries are being rationed: everything is failing
                wait = max(wait, failover.backoff(tally.attempts, self._rng))
            if now + wait >= deadline:  # Retry-After beyond the deadline: do not wait for it
                run.failures.waiting = wait
                break
            if wait > 0:
                await admission.admit()  # its replay, 409 or own 429 must not wait for a provider
                await asyncio.sleep(wait)
                tally.upstream_wait += wait
            started = await run.start(choice)
            if started is None:
                continue
            if hedge_after is not None:
                race = Race(self, run, tally, deadline, after=hedge_after, lost=hedge_lost)
                outcome = await race.run(started)  # notes each failed attempt itself
                if outcome is not None:
                    return outcome
                continue
            try:
                return await self.attempt(
                    call, started.lease, started.body, deadline, tally,
                    answer_id=run.answer_id, prompt_tokens=admission.reserve.prompt_tokens,
                )  # fmt: skip
            except UpstreamError as error:
                await run.failed(started.lease.target, error)
        await admission.admit()  # if no attempt asked the client's scope, its refusal or replay comes first
        raise self._give_up(run.failures, call.targets, loop.time(), deadline)

    def _hedge_after(self, call: Call) -> float | None:
        """Seconds after which this request is hedged, or None (off, or over the budget)."""
        if self._hedge is None or self._hedge_budget is None:
            return None
        self._hedge_budget.request()
        return self._hedge.after_for(call.model)

    def try_hedge(self) -> bool:
        """Spend one hedge from the budget; False when it is spent."""
        return self._hedge_budget is not None and self._hedge_budget.try_retry()

    @property
    def max_hedges(self) -> int:
        return self._hedge.max if self._hedge is not None else 0

    @property
    def max_attempts(self) -> int:
        return self._max_attempts

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
    ) -> Outcome:
        """One attempt under `lease`, and what it says about the target's key.

        A whole answer settles the lease at once. A stream only reports its time to first
        token at the commit point; whether it ends whole or broken settles the lease when it
        ends (Outcome.ended). `measure=False` (probes) keeps latency samples to real traffic.
        """
        target = lease.target
        try:
            answer = await self._sender.send(
                call, target, upstream_body, deadline, tally,
                request_id=call.request_id, answer_id=answer_id, prompt_tokens=prompt_tokens,
            )  # fmt: skip
        except UpstreamError as error:
            metrics.attempts(target.provider.name, metrics.attempt_outcome(error)).inc()
            lease.record(error)
            lease.end()
            raise
        except BaseException:  # the client left, or shutdown: says nothing about the target
            lease.end()
            raise
        metrics.attempts(target.provider.name, "ok").inc()
        latency = tally.first_token if measure else None
        if isinstance(answer, Committed):
            if latency is not None:
                self._health.observe(target, latency, stream=True)
            return Outcome(target, answer, lease)
        if answer.failure is not None:  # broke past its commit point
            lease.record(answer.failure)
        else:
            lease.succeeded(latency=latency)
        lease.end()
        return Outcome(target, answer, None)

    def _give_up(
        self, failures: failover.Failures, targets: tuple[Target, ...], now: float, deadline: float
    ) -> Exception:
        failures.deadline_passed = now >= deadline
        views = {t: self._health.view(t, now) for t in targets}
        failures.states = {key_id(t): v.status for t, v in views.items()}
        limited = {t: self._limited[t] for t in targets if self._at_limit(t, now)}
        for t, (_, quota) in limited.items():
            failures.states[key_id(t)] = Status.EXHAUSTED if quota else "at_limit"
        if failures.waiting is None:  # when the soonest rate-limited target is ready, for Retry-After
            cooling = [v.ready_at - now for v in views.values() if v.status is Status.COOLING]
            cooling += [until - now for until, quota in limited.values() if not quota]
            failures.waiting = min(cooling, default=None)
        return failures.final()

    def _at_limit(self, target: Target, now: float) -> bool:
        limited = self._limited.get(target)
        if limited is None:
            return False
        if limited[0] <= now:
            del self._limited[target]
            return False
        return True

    def _first_translatable(
        self,
        plan: list[routing.Candidate],
        body: JSON,
        translated: dict[Target, JSON],
        failures: failover.Failures,
        left_alone: set[Target],
    ) -> routing.Candidate | None:
        """The first planned target whose model takes this request's values."""
        for candidate in plan:
            target = candidate.target
            if target not in translated:
                try:
                    translated[target] = translate.for_target(body, target)
                except ParamNotAllowed as refusal:
                    failures.refusal = failures.refusal or refusal
                    left_alone.add(target)
                    continue
            return candidate
        return None

    def _conversation(self, client_headers: Mapping[bytes, bytes]) -> str | None:
        value = client_headers.get(b"x-conversation-id") if self._sticky else None
        return value.decode() if value is not None and _CONVERSATION.match(value) else None


class Forwarding:
    """One request's way through its targets: what was translated, tried and left alone."""

    def __init__(self, proxy: Proxy, call: Call, admission: Admission):
        self.proxy = proxy
        self.call = call
        self.admission = admission
        self.body = call.body
        self.answer_id = "chatcmpl-" + admission.settlement_key.partition("_")[2]
        self.conversation = proxy._conversation(call.headers)
        self.failures = failover.Failures(model=call.model)
        self.translated: dict[Target, JSON] = {}
        self.tried: list[Target] = []
        self.left_alone: set[Target] = set()
        self.capped = False
        self.hedges = 0
        """Hedges started for this request (routing.hedge.max), across its failovers."""

    def choose(
        self, now: float, *, tried: Sequence[Target], busy: Collection[str] = ()
    ) -> routing.Candidate | None:
        """The best target to try next, not of a provider in `busy`."""
        proxy = self.proxy
        candidates = [
            t
            for t in self.call.targets
            if t not in self.left_alone and not proxy._at_limit(t, now) and t.provider.name not in busy
        ]
        views = {t: proxy._health.view(t, now, stream=self.call.stream) for t in candidates}
        plan = routing.plan(
            candidates, views, now=now, strategy=proxy._strategy, rng=proxy._rng,
            conversation=self.conversation, tried=tried,
        )  # fmt: skip
        return proxy._first_translatable(plan, self.body, self.translated, self.failures, self.left_alone)

    async def start(self, choice: routing.Candidate) -> Started | None:
        """Reserve the target's key and take its lease; None if it cannot go now."""
        target, admission = choice.target, self.admission
        refusal = await admission.reserve_key(target)
        if refusal is not None:  # at our own limit for this key: skip it until it has room
            if refusal.remember:
                self.proxy._limited[target] = (
                    asyncio.get_running_loop().time() + refusal.wait,
                    refusal.quota,
                )
            else:
                self.left_alone.add(target)
                self.failures.waiting = min(self.failures.waiting or refusal.wait, refusal.wait)
            return None
        if admission.capped and not self.capped:
            # The budget let the request through with less room to answer: every
            # target is sent the lowered max_tokens, translated afresh.
            self.capped = True
            self.body = translate.cap_completion(self.body, admission.capped)
            self.translated.clear()
            self.translated[target] = translate.for_target(self.body, target)
        lease = self.proxy._health.begin(target, fail_open=choice.fail_open)
        if lease is None:
            await admission.release_key(target)
            return None  # its one half-open trial went to another request while we waited: plan again
        return Started(lease, self.translated[target])

    async def failed(self, target: Target, error: UpstreamError) -> None:
        """An attempt failed: note it; raise it if no other attempt can help."""
        self.failures.add(error)
        if not error.retryable:  # a final answer settles its key at the end
            raise error
        await self.admission.release_key(target)
        self.tried.append(target)
        if isinstance(error, UpstreamTimeout) or getattr(error, "verdict", None) in _LEAVE_ALONE:
            self.left_alone.add(target)
