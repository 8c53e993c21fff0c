"""Forward one chat completion: plan the targets, and attempt them until one answers.

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
from collections.abc import Mapping
from typing import TYPE_CHECKING

from . import failover, metrics, routing, translate
from .attempt import Response, Sender, StreamResponse
from .classify import Verdict
from .config import Config, Target
from .context import RequestContext
from .errors import ParamNotAllowed, UpstreamError, UpstreamTimeout
from .health import Health, Lease, Status, key_id
from .types import JSON
from .upstream import Upstream

if TYPE_CHECKING:
    from .ticket import Ticket

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
        self._total = config.routing.timeouts.total
        self._limited: dict[Target, tuple[float, bool]] = {}
        """Keys at their providers.yaml limit (until when, and whether it is the quota), as the
        shared store last said: skipped without asking again. Never waited for: SPEC §8."""

    async def forward(
        self,
        ctx: RequestContext,
        body: JSON,
        targets: tuple[Target, ...],
        client_headers: Mapping[bytes, bytes],
        ticket: Ticket | None = None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total
        conversation = self._conversation(client_headers)
        stream = bool(body.get("stream"))
        failures = failover.Failures(model=body["model"])
        translated: dict[Target, JSON] = {}
        tried: list[Target] = []
        left_alone: set[Target] = set()
        capped = False
        self._budget.request()
        while ctx.attempts < self._max_attempts:
            now = loop.time()
            candidates = [t for t in targets if t not in left_alone and not self._at_limit(t, now)]
            views = {t: self._health.view(t, now, stream=stream) for t in candidates}
            plan = routing.plan(
                candidates, views, now=now, strategy=self._strategy, rng=self._rng,
                conversation=conversation, tried=tried,
            )  # fmt: skip
            choice = self._first_translatable(plan, body, translated, failures, left_alone)
            if choice is None:
                break
            wait = choice.not_before - now
            if ctx.attempts:
                if not self._budget.try_retry():
                    break  # retries are being rationed: everything is failing
                wait = max(wait, failover.backoff(ctx.attempts, self._rng))
            if now + wait >= deadline:  # Retry-After beyond the deadline: do not wait for it
                failures.waiting = wait
                break
            if wait > 0:
                if ticket is not None:  # its replay, 409 or own 429 must not wait for a provider
                    await ticket.admit()
                await asyncio.sleep(wait)
                ctx.upstream_wait += wait
            target = choice.target
            if ticket is not None:
                refusal = await ticket.reserve_key(target)
                if refusal is not None:  # at our own limit for this key: skip it until it has room
                    if refusal.remember:
                        self._limited[target] = (loop.time() + refusal.wait, refusal.quota)
                    else:
                        left_alone.add(target)
                        failures.waiting = min(failures.waiting or refusal.wait, refusal.wait)
                    continue
                if ticket.capped and not capped:
                    # The budget let the request through with less room to answer: every
                    # target is sent the lowered max_tokens, translated afresh.
                    capped = True
                    body = translate.cap_completion(body, ticket.capped)
                    translated.clear()
                    translated[target] = translate.to_upstream(
                        body, target.route, stream_usage=target.provider.stream_usage
                    )
            lease = self._health.begin(target, fail_open=choice.fail_open)
            if lease is None:
                if ticket is not None:
                    await ticket.release_key(target)
                continue  # its one half-open trial went to another request while we waited: plan again
            try:
                return await self.attempt(
                    ctx, body, lease, translated[target], client_headers, deadline,
                    prompt_tokens=ticket.reserve.prompt_tokens if ticket is not None else 0,
                )  # fmt: skip
            except UpstreamError as error:
                failures.add(error)
                if ticket is not None and error.retryable:  # a final answer settles its key at the end
                    await ticket.release_key(target)
                if not error.retryable:
                    raise
                tried.append(target)
                if isinstance(error, UpstreamTimeout) or getattr(error, "verdict", None) in _LEAVE_ALONE:
                    left_alone.add(target)
        if ticket is not None:  # if no attempt asked the client's scope, its refusal or replay comes first
            await ticket.admit()
        raise self._give_up(failures, targets, loop.time(), deadline)

    async def attempt(
        self,
        ctx: RequestContext,
        body: JSON,
        lease: Lease,
        upstream_body: JSON,
        client_headers: Mapping[bytes, bytes],
        deadline: float,
        *,
        measure: bool = True,
        prompt_tokens: int = 0,
    ) -> Response:
        """One attempt under `lease`, and what it says about the target's key.

        A whole answer settles the lease at once. A stream only reports its time to first
        token at the commit point; whether it ends whole or broken settles the lease when it
        ends. `measure=False` (probes) keeps latency samples to real traffic.
        """

        def stream_ended(outcome: str, error: UpstreamError | None) -> None:
            if outcome == "completed":
                lease.succeeded()
            elif error is not None:  # cut, stalled, broken or refused after the commit point
                lease.record(error)
            lease.end()  # a client that left says nothing about the key

        try:
            response = await self._sender.send(
                ctx, body, lease.target, upstream_body, client_headers, deadline,
                on_stream_end=stream_ended, prompt_tokens=prompt_tokens,
            )  # fmt: skip
        except UpstreamError as error:
            metrics.attempts(lease.target.provider.name, metrics.attempt_outcome(error)).inc()
            lease.record(error)
            lease.end()
            raise
        except BaseException:  # the client left, or shutdown: says nothing about the target
            lease.end()
            raise
        metrics.attempts(lease.target.provider.name, "ok").inc()
        latency = ctx.first_token if measure else None
        if isinstance(response, StreamResponse):
            if latency is not None:
                self._health.observe(lease.target, latency, stream=True)
        else:
            lease.succeeded(latency=latency)
            lease.end()
        return response

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
                    translated[target] = translate.to_upstream(
                        body, target.route, stream_usage=target.provider.stream_usage
                    )
                except ParamNotAllowed as refusal:
                    failures.refusal = failures.refusal or refusal
                    left_alone.add(target)
                    continue
            return candidate
        return None

    def _conversation(self, client_headers: Mapping[bytes, bytes]) -> str | None:
        value = client_headers.get(b"x-conversation-id") if self._sticky else None
        return value.decode() if value is not None and _CONVERSATION.match(value) else None
