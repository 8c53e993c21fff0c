"""What a loaded configuration is: frozen objects, safe to share between requests and tasks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

EMPTY: Mapping[str, Any] = MappingProxyType({})

STRATEGIES = ("weighted", "ordered", "latency", "least_busy")
FEATURES = (
    "tools", "tool_role", "image", "audio", "file", "json_object", "json_schema", "logprobs", "n", "top_k",
)  # fmt: skip
"""What a request may use that not every provider accepts (providers.yaml `accepts`)."""
KINDS = ("chat", "embedding", "rerank")
"""What a model is (providers.yaml `kind`): which endpoints may use it (api.Endpoint.kind)."""
ON_EXCEED = ("refuse", "cap")
PERIODS = ("day", "month", "total")


@dataclass(frozen=True, slots=True)
class ParamRules:
    """How a provider's model wants the request body changed (providers.yaml `params`).

    Applied in this order: drop, defaults, allowed (checked), rename. All names are the
    client's (OpenAI) parameter names; `rename` maps them to the provider's.
    """

    drop: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=lambda: EMPTY)
    allowed: Mapping[str, tuple[Any, ...]] = field(default_factory=lambda: EMPTY)
    rename: Mapping[str, str] = field(default_factory=lambda: EMPTY)

    def __bool__(self) -> bool:
        return bool(self.drop or self.defaults or self.allowed or self.rename)

    def then(self, more: ParamRules) -> ParamRules:
        """Provider-wide rules refined by a model's: the model's entries win."""
        return ParamRules(
            drop=self.drop | more.drop,
            defaults=MappingProxyType({**self.defaults, **more.defaults}),
            allowed=MappingProxyType({**self.allowed, **more.allowed}),
            rename=MappingProxyType({**self.rename, **more.rename}),
        )


@dataclass(frozen=True, slots=True)
class Limits:
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class Allowance:
    """A budget (client) or quota (provider key): tokens or cost per period."""

    per: str
    tokens: int | None = None
    cost: float | None = None
    on_exceed: str = "refuse"
    """A budget's answer to a request that needs more than is left: "refuse" (402) or "cap"
    (send it with its completion lowered to fit). A key's quota has none."""


@dataclass(frozen=True, slots=True)
class Price:
    """Per million tokens, in the account's currency."""

    input: float
    output: float
    cached_input: float | None = None
    """Prompt tokens served from the provider's prompt cache; None: priced as `input`."""


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """One model as one provider serves it."""

    name: str
    upstream: str
    params: ParamRules = ParamRules()
    price: Price | None = None
    accepts: frozenset[str] | None = None
    """The FEATURES this model takes at this provider; None: all of them (nothing declared)."""
    kind: str = "chat"
    """Of KINDS: a chat model, or one that embeds or reranks."""


@dataclass(frozen=True, slots=True)
class Probe:
    """Active health checks for keys that get no traffic (off unless configured)."""

    interval: float
    model: str


@dataclass(frozen=True, slots=True)
class ProviderKey:
    name: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class TLS:
    """How a provider's certificate is checked (providers.yaml `tls`)."""

    ca_file: str | None = None
    """A PEM bundle trusted instead of the system's store (SSL_CERT_FILE sets that store)."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str
    keys: tuple[ProviderKey, ...]
    models: Mapping[str, ModelRoute]
    dialect: str | None = None
    priority: int = 1
    weight: float = 1.0
    limits: Limits = Limits()
    quota: Allowance | None = None
    forward_headers: tuple[str, ...] = ()
    stream_usage: bool = True
    """Whether the provider takes `stream_options.include_usage` (else it is removed)."""
    streaming: bool = True
    """Whether the provider streams: then a request the client did not stream is read as a
    stream too, so `first_token` and `idle` bound it (attempt.py). Else `timeouts.response`."""
    probe: Probe | None = None
    tls: TLS = TLS()


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    key_sha256: bytes = field(repr=False)
    models: tuple[str, ...] = ("*",)
    limits: Limits = Limits()
    budget: Allowance | None = None
    demo_only: bool = False
    demo_key: str | None = field(default=None, repr=False)
    """The plaintext key of a `demo_only` client, so `serve --demo` can print a working curl."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    first_token: float = 30.0
    """Streams: request sent -> the first chunk carrying answer content."""
    idle: float = 30.0
    """Streams: the longest silence between chunks."""
    response: float = 180.0
    """Providers that do not stream (`streaming: false`): request sent -> the whole answer."""
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class Breaker:
    failures: int = 3
    cooldown: float = 30.0
    max_cooldown: float = 300.0


@dataclass(frozen=True, slots=True)
class Hedge:
    """routing.hedge: a second provider asked when the first has not answered in time."""

    after: float = 2.0
    """Seconds without a first token after which a hedge starts."""
    max: int = 1
    """Hedges per request at most."""
    budget: float = 0.1
    """Hedges over the last 10 s at most this share of requests (plus one), as retries are."""
    models: Mapping[str, float | None] = field(default_factory=dict)
    """Per model: its own `after`, or None for no hedging. Models not named use `after`."""

    def after_for(self, model: str) -> float | None:
        return self.models.get(model, self.after)


@dataclass(frozen=True, slots=True)
class Routing:
    strategy: str = "weighted"
    max_attempts: int = 3
    breaker: Breaker = Breaker()
    timeouts: Timeouts = Timeouts()
    sticky: str | None = "conversation"
    hedge: Hedge | None = None
    """Off unless configured."""


@dataclass(frozen=True, slots=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 8 * 1024 * 1024
    shutdown_delay: float = 0.0
    """SIGTERM: seconds to keep accepting (with /readyz 503) so load balancers notice first."""
    grace: float = 30.0
    """SIGTERM: seconds in-flight requests (streams) get to finish once new connections stop."""
    # The edge (router/edge.py): what one client connection may cost before it is answered.
    max_header_bytes: int = 65536
    """The request line and headers together; past it 431, without reading further."""
    max_headers: int = 100
    header_timeout: float = 10.0
    """The whole head: from the connection's start, or from the next request's first byte."""
    body_idle_timeout: float = 30.0
    """The longest silence while a request body is still coming."""
    body_timeout: float = 60.0
    """The whole request body, from the end of its head."""
    keepalive_timeout: float = 5.0
    """An idle connection between requests (uvicorn's timeout_keep_alive)."""
    max_connections: int = 10000
    """Open client connections per process; one more is answered 503 and closed."""
    metrics_port: int | None = None
    """GET /metrics on its own listener at this port (same host); the main port then 404s it."""


@dataclass(frozen=True, slots=True)
class State:
    url: str = "memory://"
    on_failure: str = "local"
    replicas: int = 1
    """How many routers share the store: local limits while it is down are limit / replicas."""
    timeout: float = 0.25
    """Redis socket timeout: a slow store must not make a slow router."""
    retention: float = 86400.0
    """How long idempotency keys (and their stored answers) are kept."""
    ledger_file: str | None = None
    """memory:// only: also append settlement records to this JSONL file."""
    lease_ttl: float = 30.0
    """How long a replica's in-flight holds (leases, claims, settlement intents) outlive its
    last renewal; renewed every third of it. A dead replica's requests settle after it."""
    journal: str | None = None
    """A directory for the durable outbox: settlements that cannot reach the store wait here."""
    journal_max: int = 100_000
    """Settlements the journal holds at most; past it a settlement is dropped (and counted)."""
    replay_window: float = 3600.0
    """How long a settlement key is remembered (done markers): a replay from the journal
    within it is applied once."""
    ledger_retention: LedgerRetention = field(default_factory=lambda: LedgerRetention())
    """How much of each client's ledger stream Redis keeps; an exporter trims it sooner."""


@dataclass(frozen=True, slots=True)
class LedgerRetention:
    """A bound on each ledger stream: by age, or by number of records (0: that bound is off)."""

    seconds: float = 7 * 86400.0
    records: int = 0


@dataclass(frozen=True, slots=True)
class LedgerSinks:
    """Where `router ledger export` writes settlement records (and `router ledger` reads them)."""

    postgres: str | None = field(default=None, repr=False)
    """A PostgreSQL connection string (it may hold a password)."""
    table: str = "settlements"
    jsonl: str | None = None
    """A directory: one JSONL file a day."""
    batch: int = 500
    declared: bool = False
    """The config has a `ledger:` section: an exporter runs, even if this process is not told
    where it writes (the serving replicas need no database credentials)."""

    @property
    def configured(self) -> bool:
        return self.postgres is not None or self.jsonl is not None


@dataclass(frozen=True, slots=True)
class Admin:
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Metrics:
    key: str | None = field(default=None, repr=False)
    """When set, GET /metrics needs `Authorization: Bearer <key>` (it names clients and budgets)."""


@dataclass(frozen=True, slots=True, eq=False)
class Target:
    """Somewhere a request can go: one model at one provider, through one of its keys.

    Compared by identity: a config builds each target once, so targets key dicts cheaply.
    """

    provider: Provider
    key: ProviderKey
    route: ModelRoute

    @property
    def name(self) -> str:
        return f"{self.provider.name}/{self.key.name}"


@dataclass(frozen=True, slots=True)
class Config:
    providers: Mapping[str, Provider]
    server: Server = Server()
    state: State = State()
    admin: Admin = Admin()
    metrics: Metrics = Metrics()
    clients: tuple[Client, ...] = ()
    routing: Routing = Routing()
    ledger: LedgerSinks = LedgerSinks()
    targets: Mapping[str, tuple[Target, ...]] = field(default_factory=lambda: EMPTY)
    """Model name -> every (provider, key) serving it, in config order."""

    @classmethod
    def build(cls, **parts: Any) -> Config:
        config = cls(**parts)
        return replace(config, targets=routing_table(config.providers))

    def with_upstreams(self, base_urls: Mapping[str, str], key: str) -> Config:
        """The same config with every provider's base URL and keys replaced (for --demo)."""
        providers = {
            name: replace(
                p,
                base_url=base_urls[name],
                keys=tuple(replace(k, secret=key) for k in p.keys),
            )
            for name, p in self.providers.items()
        }
        return Config.build(
            providers=MappingProxyType(providers),
            server=self.server,
            state=self.state,
            admin=self.admin,
            metrics=self.metrics,
            clients=self.clients,
            routing=self.routing,
        )


def routing_table(providers: Mapping[str, Provider]) -> Mapping[str, tuple[Target, ...]]:
    table: dict[str, list[Target]] = {}
    for provider in providers.values():
        for route in provider.models.values():
            for key in provider.keys:
                table.setdefault(route.name, []).append(Target(provider, key, route))
    return MappingProxyType({model: tuple(targets) for model, targets in table.items()})
