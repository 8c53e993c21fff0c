"""Active health probes, off by default: a key that gets no traffic is checked now and then.

With `probe: {interval: 60s}` on a provider, each of its keys that has been idle for the
interval is sent a one-token request. The answer moves the key's breaker like any other
attempt, so an open breaker can close, or a dead key be noticed, without a client's request
being the one to find out.
"""

from __future__ import annotations

import asyncio

from . import translate
from .attempt import Tally, Whole
from .call import Call
from .config import Config, Target
from .context import new_request_id
from .errors import UpstreamError
from .health import Health
from .proxy import Proxy

PROBE_BODY = {"messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}


def probed_targets(config: Config) -> list[Target]:
    """One target per key of every provider with probes on, for its probe model."""
    return [
        target
        for targets in config.targets.values()
        for target in targets
        if target.provider.probe is not None and target.route.name == target.provider.probe.model
    ]


async def run(config: Config, proxy: Proxy, health: Health) -> None:
    """Probe forever (until cancelled), checking every key at least once per its interval."""
    targets = probed_targets(config)
    if not targets:
        return
    tick = min(t.provider.probe.interval for t in targets if t.provider.probe) / 4
    while True:
        due = [t for t in targets if t.provider.probe and health.idle_for(t) >= t.provider.probe.interval]
        await asyncio.gather(*(probe(config, proxy, health, t) for t in due))
        await asyncio.sleep(tick)


async def probe(config: Config, proxy: Proxy, health: Health, target: Target) -> bool:
    """One probe request; True if the key answered."""
    body = {"model": target.route.name, **PROBE_BODY}
    upstream_body = translate.for_target(body, target)
    request_id = "probe_" + new_request_id()[4:]
    call = Call.of(request_id, body, b"", client=None, targets=(target,), headers={}, idempotency=None)
    deadline = asyncio.get_running_loop().time() + config.routing.timeouts.first_token
    lease = health.begin(target, fail_open=True)  # a probe may try an open key: that is its job
    assert lease is not None
    try:
        outcome = await proxy.attempt(
            call, lease, upstream_body, deadline, Tally(), answer_id="chatcmpl-" + request_id, measure=False
        )
    except UpstreamError:
        return False
    answer = outcome.answer
    return not isinstance(answer, Whole) or answer.failure is None
