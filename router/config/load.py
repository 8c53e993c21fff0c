"""providers.yaml + environment -> a validated, frozen Config, or every problem found.

The file's shape is SPEC §5. Each section has one reader below; a reader takes the raw
YAML value and its path and records problems instead of raising.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .expand import expand
from .fields import Problems
from .model import (
    STRATEGIES,
    Admin,
    Breaker,
    Client,
    Config,
    Hedge,
    LedgerRetention,
    LedgerSinks,
    Metrics,
    Routing,
    Server,
    State,
    Timeouts,
)
from .providers import read_providers

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}\Z")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
STATE_SCHEMES = ("memory", "redis", "rediss", "redis+cluster", "rediss+cluster")


# Defaults come from the dataclasses themselves (slots classes keep no class attributes).
_DEFAULT_SERVER, _DEFAULT_STATE, _DEFAULT_ROUTING = Server(), State(), Routing()
_DEFAULT_BREAKER, _DEFAULT_TIMEOUTS = Breaker(), Timeouts()


class ConfigError(Exception):
    """The config cannot be used; `problems` holds one line per problem, each naming its YAML path."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def default_path() -> str:
    return os.environ.get("ROUTER_CONFIG") or "providers.yaml"


def load(path: str | Path, *, demo: bool = False, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    return parse(text, source=str(path), demo=demo, env=os.environ if env is None else env)


def parse(text: str, *, source: str = "<config>", demo: bool = False, env: Mapping[str, str]) -> Config:
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_problem(source, exc)]) from None
    tree, missing = expand(raw, env)
    problems = Problems()
    for where, var in missing:
        # --demo replaces every provider URL and key, so their variables may be unset.
        if not (demo and where.startswith("providers.")):
            problems.add(where, f"${{{var}}} is not set and has no default")
    config = _read_config(tree, problems, demo=demo)
    if problems:
        raise ConfigError(problems.lines)
    return config


def _read_config(tree: Any, p: Problems, *, demo: bool) -> Config:
    top = p.mapping(
        tree,
        "",
        ("server", "state", "admin", "metrics", "clients", "routing", "ledger", "providers"),
        required=("providers",),
    )
    providers = read_providers(top.get("providers"), p, demo=demo)
    clients = _clients(top.get("clients"), p, demo=demo)
    return Config.build(
        server=_server(top.get("server"), p),
        state=_state(top.get("state"), p, exported=top.get("ledger") is not None),
        admin=_admin(top.get("admin"), p),
        metrics=_metrics(top.get("metrics"), p),
        clients=clients,
        routing=_routing(top.get("routing"), p),
        ledger=_ledger(top.get("ledger"), p),
        providers=MappingProxyType(providers),
    )


def _admin(raw: Any, p: Problems) -> Admin:
    m = p.mapping(raw, "admin", ("key",))
    return Admin(key=p.string(m.get("key"), "admin.key") or None)


def _metrics(raw: Any, p: Problems) -> Metrics:
    m = p.mapping(raw, "metrics", ("key",))
    return Metrics(key=p.string(m.get("key"), "metrics.key") or None)


def _server(raw: Any, p: Problems) -> Server:
    m = p.mapping(
        raw,
        "server",
        (
            "host",
            "port",
            "max_body_bytes",
            "shutdown_delay",
            "grace",
            "max_header_bytes",
            "max_headers",
            "max_connections",
            "metrics_port",
            "header_timeout",
            "body_idle_timeout",
            "body_timeout",
            "keepalive_timeout",
        ),
    )
    d = _DEFAULT_SERVER
    port = p.integer(m.get("port"), "server.port", d.port, lo=1, hi=65535)
    metrics_port = None
    if m.get("metrics_port") is not None:
        metrics_port = p.integer(m["metrics_port"], "server.metrics_port", 0, lo=1, hi=65535) or None
        if metrics_port == port:
            p.add("server.metrics_port", f"must differ from server.port ({port})")
    return Server(
        host=p.string(m.get("host"), "server.host", d.host, empty_ok=False),
        port=port,
        max_body_bytes=p.integer(m.get("max_body_bytes"), "server.max_body_bytes", d.max_body_bytes, lo=1024),
        shutdown_delay=_delay(m.get("shutdown_delay"), "server.shutdown_delay", p),
        grace=p.duration(m.get("grace"), "server.grace", d.grace),
        max_header_bytes=p.integer(
            m.get("max_header_bytes"), "server.max_header_bytes", d.max_header_bytes, lo=1024
        ),
        max_headers=p.integer(m.get("max_headers"), "server.max_headers", d.max_headers, lo=1),
        max_connections=p.integer(
            m.get("max_connections"), "server.max_connections", d.max_connections, lo=1
        ),
        metrics_port=metrics_port,
        header_timeout=p.duration(m.get("header_timeout"), "server.header_timeout", d.header_timeout),
        body_idle_timeout=p.duration(
            m.get("body_idle_timeout"), "server.body_idle_timeout", d.body_idle_timeout
        ),
        body_timeout=p.duration(m.get("body_timeout"), "server.body_timeout", d.body_timeout),
        keepalive_timeout=p.duration(
            m.get("keepalive_timeout"), "server.keepalive_timeout", d.keepalive_timeout
        ),
    )


def _delay(raw: Any, path: str, p: Problems) -> float:
    """A duration that may be zero ("0s" or 0: no delay)."""
    if raw in (0, "0", "0s", "0ms"):
        return 0.0
    return p.duration(raw, path, _DEFAULT_SERVER.shutdown_delay)


def _state(raw: Any, p: Problems, *, exported: bool) -> State:
    m = p.mapping(
        raw,
        "state",
        (
            "url", "on_failure", "replicas", "timeout", "retention", "ledger_file", "lease_ttl",
            "journal", "journal_max", "replay_window", "ledger_retention",
        ),
    )  # fmt: skip
    url = p.string(m.get("url"), "state.url", _DEFAULT_STATE.url) or _DEFAULT_STATE.url
    if url.split("://", 1)[0] not in STATE_SCHEMES or "://" not in url:
        # Only the scheme is shown: the rest of a Redis URL may hold its password.
        shown = url.split("://", 1)[0] + "://…" if "://" in url else "a URL without a scheme"
        p.add("state.url", f"expected memory://, redis://…, rediss://… or redis+cluster://…, got {shown}")
    return State(
        url=url,
        on_failure=p.choice(
            m.get("on_failure"), "state.on_failure", _DEFAULT_STATE.on_failure, ("local", "closed")
        ),
        replicas=p.integer(m.get("replicas"), "state.replicas", _DEFAULT_STATE.replicas, lo=1),
        timeout=p.duration(m.get("timeout"), "state.timeout", _DEFAULT_STATE.timeout),
        retention=p.duration(m.get("retention"), "state.retention", _DEFAULT_STATE.retention),
        ledger_file=p.string(m.get("ledger_file"), "state.ledger_file") or None,
        lease_ttl=p.duration(m.get("lease_ttl"), "state.lease_ttl", _DEFAULT_STATE.lease_ttl),
        journal=p.string(m.get("journal"), "state.journal") or None,
        journal_max=p.integer(m.get("journal_max"), "state.journal_max", _DEFAULT_STATE.journal_max, lo=1),
        replay_window=p.duration(m.get("replay_window"), "state.replay_window", _DEFAULT_STATE.replay_window),
        ledger_retention=_ledger_retention(m.get("ledger_retention"), p, exported=exported),
    )


def _ledger_retention(raw: Any, p: Problems, *, exported: bool) -> LedgerRetention:
    """`7d` (an age) or `1000000` (a number of records). Unset, 7 days, or none at all when an
    exporter runs (a `ledger:` section): it trims what it has written, and a bound on the
    serving side would delete what it has not, silently, should it fall behind."""
    if raw is None:
        return LedgerRetention(seconds=0.0) if exported else LedgerRetention()
    counted = isinstance(raw, int) and not isinstance(raw, bool)
    if counted or (isinstance(raw, str) and raw.strip().isdigit()):
        return LedgerRetention(seconds=0.0, records=p.integer(raw, "state.ledger_retention", 0, lo=1))
    return LedgerRetention(seconds=p.duration(raw, "state.ledger_retention", LedgerRetention().seconds))


def _ledger(raw: Any, p: Problems) -> LedgerSinks:
    m = p.mapping(raw, "ledger", ("postgres", "table", "jsonl", "batch"))
    d = LedgerSinks()
    table = p.string(m.get("table"), "ledger.table", d.table) or d.table
    if not _TABLE_NAME.match(table):
        p.add(
            "ledger.table",
            f"expected a table name (letters, digits, _; optionally schema.table), got {table!r}",
        )
        table = d.table
    return LedgerSinks(
        postgres=p.string(m.get("postgres"), "ledger.postgres") or None,
        table=table,
        jsonl=p.string(m.get("jsonl"), "ledger.jsonl") or None,
        batch=p.integer(m.get("batch"), "ledger.batch", d.batch, lo=1, hi=10_000),
        declared=raw is not None,
    )


def _routing(raw: Any, p: Problems) -> Routing:
    m = p.mapping(raw, "routing", ("strategy", "max_attempts", "breaker", "timeouts", "sticky", "hedge"))
    b = p.mapping(m.get("breaker"), "routing.breaker", ("failures", "cooldown", "max_cooldown"))
    breaker = Breaker(
        failures=p.integer(b.get("failures"), "routing.breaker.failures", _DEFAULT_BREAKER.failures, lo=1),
        cooldown=p.duration(b.get("cooldown"), "routing.breaker.cooldown", _DEFAULT_BREAKER.cooldown),
        max_cooldown=p.duration(
            b.get("max_cooldown"), "routing.breaker.max_cooldown", _DEFAULT_BREAKER.max_cooldown
        ),
    )
    if breaker.max_cooldown < breaker.cooldown:
        p.add("routing.breaker.max_cooldown", "must not be shorter than cooldown")
    t = p.mapping(
        m.get("timeouts"), "routing.timeouts", ("connect", "first_token", "idle", "response", "total")
    )
    timeouts = Timeouts(
        connect=p.duration(t.get("connect"), "routing.timeouts.connect", _DEFAULT_TIMEOUTS.connect),
        first_token=p.duration(
            t.get("first_token"), "routing.timeouts.first_token", _DEFAULT_TIMEOUTS.first_token
        ),
        idle=p.duration(t.get("idle"), "routing.timeouts.idle", _DEFAULT_TIMEOUTS.idle),
        response=p.duration(t.get("response"), "routing.timeouts.response", _DEFAULT_TIMEOUTS.response),
        total=p.duration(t.get("total"), "routing.timeouts.total", _DEFAULT_TIMEOUTS.total),
    )
    for name in ("connect", "first_token", "idle", "response"):
        if getattr(timeouts, name) <= timeouts.total:
            continue
        if name in t:
            p.add(f"routing.timeouts.{name}", "must not be longer than total")
        else:  # a default longer than a short total shrinks to it
            timeouts = replace(timeouts, **{name: timeouts.total})
    sticky = m.get("sticky", "conversation")
    if sticky in (None, False, "none"):
        sticky = None
    elif sticky != "conversation":
        p.add("routing.sticky", f"expected conversation or none, got {sticky!r}")
        sticky = "conversation"
    return Routing(
        strategy=p.choice(m.get("strategy"), "routing.strategy", _DEFAULT_ROUTING.strategy, STRATEGIES),
        max_attempts=p.integer(
            m.get("max_attempts"), "routing.max_attempts", _DEFAULT_ROUTING.max_attempts, lo=1, hi=10
        ),
        breaker=breaker,
        timeouts=timeouts,
        sticky=sticky,
        hedge=_hedge(m.get("hedge"), p),
    )


def _hedge(raw: Any, p: Problems) -> Hedge | None:
    if raw is None or raw is False or raw == "off":
        return None
    m = p.mapping(raw, "routing.hedge", ("after", "max", "budget", "models"))
    default = Hedge()
    budget = m.get("budget")
    if isinstance(budget, str) and budget.strip().endswith("%"):
        share = (
            p.number(budget.strip()[:-1], "routing.hedge.budget", default.budget * 100, lo=0, hi=100) / 100
        )
    else:
        share = p.number(budget, "routing.hedge.budget", default.budget, lo=0, hi=1)
    models: dict[str, float | None] = {}
    for model, value in p.entries(m.get("models"), "routing.hedge.models").items():
        path = f"routing.hedge.models.{model}"
        models[model] = None if value is False or value == "off" else p.duration(value, path, default.after)
    return Hedge(
        after=p.duration(m.get("after"), "routing.hedge.after", default.after),
        max=p.integer(m.get("max"), "routing.hedge.max", default.max, lo=1, hi=3),
        budget=share,
        models=models,
    )


def _clients(raw: Any, p: Problems, *, demo: bool) -> tuple[Client, ...]:
    clients: list[Client] = []
    names: set[str] = set()
    digests: dict[bytes, str] = {}
    for i, item in enumerate(p.items(raw, "clients")):
        path = f"clients[{i}]"
        m = p.mapping(
            item,
            path,
            ("name", "key", "key_sha256", "models", "limits", "budget", "demo_only"),
            required=("name",),
        )
        name = p.string(m.get("name"), f"{path}.name")
        if name:
            p.name(name, f"{path}.name", "client name")
            if name in names:
                p.add(f"{path}.name", f"duplicate client name {name!r}")
            names.add(name)
        key = p.string(m.get("key"), f"{path}.key")
        hexdigest = p.string(m.get("key_sha256"), f"{path}.key_sha256")
        digest = b""
        if ("key" in m) == ("key_sha256" in m):
            p.add(path, "give exactly one of key or key_sha256")
        elif "key" in m:
            if key:
                digest = hashlib.sha256(key.encode()).digest()
            else:
                p.add(f"{path}.key", "empty: set the client's key (usually through its ${VAR})")
        elif not _SHA256.match(hexdigest):
            p.add(f"{path}.key_sha256", "expected 64 hex characters (see `router keys new`)")
        else:
            digest = bytes.fromhex(hexdigest)
        if digest and digest in digests:
            p.add(path, f"same key as client {digests[digest]!r}")
        digests.setdefault(digest, name)
        models = tuple(p.strings(m.get("models"), f"{path}.models")) if "models" in m else ("*",)
        demo_only = p.boolean(m.get("demo_only"), f"{path}.demo_only", False)
        client = Client(
            name=name,
            key_sha256=digest,
            models=models,
            limits=p.limits(m.get("limits"), f"{path}.limits"),
            budget=p.allowance(m.get("budget"), f"{path}.budget"),
            demo_only=demo_only,
            demo_key=key if demo_only and key else None,
        )
        if demo or not demo_only:
            clients.append(client)
    return tuple(clients)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: a repeated provider would otherwise vanish silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(source: str, exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{source}:{mark.line + 1}:{mark.column + 1}: {what}"
    return f"{source}: {what}"
