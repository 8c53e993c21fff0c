"""Everything a request needs, built from one Config: auth, the proxy, the provider pools."""

from __future__ import annotations

import orjson

from .auth import Authenticator
from .config import Client, Config
from .proxy import Proxy
from .upstream import Upstream


class Runtime:
    """Everything a request needs, built from one Config."""

    def __init__(self, config: Config, upstream: Upstream):
        self.config = config
        self.auth = Authenticator(config.clients)
        self.upstream = upstream
        self.proxy = Proxy(config, upstream)
        self._models_json: dict[str | None, bytes] = {}

    def models_json(self, client: Client | None) -> bytes:
        """GET /v1/models for this client: the configured models its allow-list admits."""
        key = client.name if client else None
        cached = self._models_json.get(key)
        if cached is None:
            models = sorted(m for m in self.config.targets if self.auth.allows(client, m))
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "router"} for m in models]
            cached = self._models_json[key] = orjson.dumps({"object": "list", "data": data})
        return cached

    def unready_reason(self) -> str | None:
        if not self.config.targets:
            return "no provider serves any model"
        return None
