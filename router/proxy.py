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

from . import failover, routing, translate
from .attempt import Response, Sender, StreamResponse
from .classify import Verdict
from .config import Config, Target
from .context import RequestContext
from .errors import ParamNotAllowed, UpstreamError, UpstreamTimeout
from .health import Health, Status
from .types import JSON
from .upstream import Upstream

_CONVERSATION = re.compile(rb"^[\x21-\x7e]{1,256}$")
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

    async def forward(
        self,
        ctx: RequestContext,
        body: JSON,
        targets: tuple[Target, ...],
        client_headers: Mapping[bytes, bytes],
    ) -> Response:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._total
        conversation = self._conversation(client_headers)
        failures = failover.Failures(model=body["model"])
        translated: dict[Target, JSON] = {}
        tried: list[Target] = []
        left_alone: set[Target] = set()
        self._budget.request()
        while ctx.attempts < self._max_attempts:
            now = loop.time()
            open_targets = [t for t in targets if t not in left_alone]
            views = {t: self._health.view(t, now) for t in open_targets}
            plan = routing.plan(
                open_targets,
                views,
                now=now,
                strategy=self._strategy,
                rng=self._rng,
                conversation=conversation,
                tried=tried,
            )
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
                await asyncio.sleep(wait)
                ctx.upstream_wait += wait
            target = choice.target
            try:
                response = await self.attempt(ctx, body, target, translated[target], client_headers, deadline)
            except UpstreamError as error:
                failures.add(error)
                if not error.retryable:
                    raise
                tried.append(target)
                if isinstance(error, UpstreamTimeout) or getattr(error, "verdict", None) in _LEAVE_ALONE:
                    left_alone.add(target)
                continue
            return response
        now = loop.time()
        failures.deadline_passed = now >= deadline
        if failures.waiting is None:  # when the soonest rate-limited target is ready, for Retry-After
            cooling = [
                v.ready_at - now for t in targets if (v := self._health.view(t, now)).status is Status.COOLING
            ]
            failures.waiting = min(cooling, default=None)
        raise failures.final()

    async def attempt(
        self,
        ctx: RequestContext,
        body: JSON,
        target: Target,
        upstream_body: JSON,
        client_headers: Mapping[bytes, bytes],
        deadline: float,
    ) -> Response:
        """One attempt, with its effect on the target's health."""
        health = self._health
        health.begin(target)

        def stream_ended(outcome: str) -> None:
            health.end(target)
            if outcome == "error":  # cut, stalled or broken after the commit point
                health.failed(target)

        try:
            response = await self._sender.send(
                ctx, body, target, upstream_body, client_headers, deadline, on_stream_end=stream_ended
            )
        except UpstreamError as error:
            health.record(target, error)
            health.end(target)
            raise
        except BaseException:  # the client left, or shutdown: says nothing about the target
            health.release(target)
            raise
        health.succeeded(target, ttft=ctx.first_token)
        if not isinstance(response, StreamResponse):
            health.end(target)
        return response

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
