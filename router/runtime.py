"""Everything a request needs, built from one Config: auth, health, the proxy, the provider pools."""

from __future__ import annotations

import asyncio

import orjson

from . import metrics
from .auth import Authenticator
from .config import Client, Config
from .health import Health, Status
from .ledger import Ledger
from .proxy import Proxy
from .state import GuardedStore, open_store
from .upstream import Upstream

# States that need an operator (or a quota roll-over), not just time: a model whose every
# target is in one of them cannot be served by waiting. A breaker cooling down can.
_NEEDS_OPS = (Status.DRAINED, Status.BROKEN, Status.EXHAUSTED)


def model_object(model: str) -> dict[str, object]:
    """One OpenAI model object: an entry of GET /v1/models, and the answer of GET /v1/models/{id}."""
    return {"id": model, "object": "model", "created": 0, "owned_by": "router"}


class Runtime:
    """Everything a request needs, built from one Config."""

    def __init__(
        self,
        config: Config,
        upstream: Upstream,
        *,
        health: Health | None = None,
        state: GuardedStore | None = None,
    ):
        self.config = config
        self.ledger = Ledger(config, state or open_store(config.state, on_error=metrics.state_error))
        self.auth = Authenticator(config.clients)
        self.upstream = upstream
        self.targets = tuple({t: None for ts in config.targets.values() for t in ts})
        self.health = health or Health(self.targets, config.routing.breaker)
        self.proxy = Proxy(config, upstream, self.health)
        self._models_json: dict[str | None, bytes] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.active = 0
        """Requests in a handler on this runtime (streams stay counted by the ledger after)."""
        """Its background work (probes, lease renewal, gauges): stopped when it is retired."""

    def models_json(self, client: Client | None) -> bytes:
        """GET /v1/models for this client: the configured models its allow-list admits."""
        key = client.name if client else None
        cached = self._models_json.get(key)
        if cached is None:
            models = sorted(m for m in self.config.targets if self.auth.allows(client, m))
            data = [model_object(m) for m in models]
            cached = self._models_json[key] = orjson.dumps({"object": "list", "data": data})
        return cached

    def model_json(self, client: Client | None, model: str) -> bytes | None:
        """GET /v1/models/{model} for this client: its entry of models_json(), or None when
        no provider serves the model or the client's allow-list excludes it."""
        if model not in self.config.targets or not self.auth.allows(client, model):
            return None
        return orjson.dumps(model_object(model))

    def unready_reason(self) -> str | None:
        """SPEC §3: ready while at least one provider is usable. A breaker that is open still
        counts (routing fails open to it); drained, refused or exhausted keys do not."""
        if not self.targets:
            return "no provider serves any model"
        if all(self.health.view(t).status in _NEEDS_OPS for t in self.targets):
            return "every provider is drained, refuses our key or is out of quota"
        if self.ledger.state.degraded and self.config.state.on_failure == "closed":
            return "shared state unreachable (state.on_failure: closed)"
        return None
