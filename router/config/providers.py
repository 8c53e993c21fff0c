"""The providers section of providers.yaml: base URLs, keys, models and their parameter rules."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .fields import Problems
from .model import FEATURES, KINDS, TLS, ModelRoute, ParamRules, Price, Probe, Provider, ProviderKey

DIALECTS = ("trinity", "chenyu", "real200")
DEMO_PLACEHOLDER_URL = "http://demo.invalid"

_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")
_PRINTABLE = re.compile(r"^[\x21-\x7e]+\Z")
# Never forwarded whatever the config says: the client's credentials and hop-by-hop headers.
_UNFORWARDABLE = frozenset({
    "authorization", "cookie", "set-cookie", "host", "content-length", "connection", "keep-alive",
    "proxy-authorization", "proxy-authenticate", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade",
})  # fmt: skip


def read_providers(raw: Any, p: Problems, *, demo: bool) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    entries = p.entries(raw, "providers")
    if raw is not None and not entries:
        p.add("providers", "configure at least one provider")
    for name, item in entries.items():
        provider = _provider(name, item, f"providers.{name}", p, demo=demo)
        if provider is not None:
            providers[name] = provider
    _same_kind(providers, p)
    return providers


def _same_kind(providers: Mapping[str, Provider], p: Problems) -> None:
    """A model name is one kind wherever it is served: routing by name may pick any of them."""
    kinds: dict[str, str] = {}
    for name, provider in providers.items():
        for model, route in provider.models.items():
            first = kinds.setdefault(model, route.kind)
            if route.kind != first:
                p.add(
                    f"providers.{name}.models.{model}.kind",
                    f"{route.kind!r}, but another provider serves {model!r} as {first!r}",
                )


_PROVIDER_KEYS = (
    "base_url",
    "keys",
    "dialect",
    "priority",
    "weight",
    "limits",
    "quota",
    "forward_headers",
    "params",
    "models",
    "stream_usage",
    "streaming",
    "accepts",
    "probe",
    "tls",
)


def _provider(name: str, raw: Any, path: str, p: Problems, *, demo: bool) -> Provider | None:
    p.name(name, path, "provider name")
    m = p.mapping(raw, path, _PROVIDER_KEYS, required=("base_url", "keys", "models"))
    base_url = p.string(m.get("base_url"), f"{path}.base_url").rstrip("/")
    if not base_url:
        if demo:
            base_url = DEMO_PLACEHOLDER_URL
        elif "base_url" in m:
            p.add(f"{path}.base_url", "empty: set it, or its variable, to the provider's URL")
    elif not base_url.startswith(("http://", "https://")):
        p.add(f"{path}.base_url", "expected an http:// or https:// URL")  # not echoed: it may hold a token
    dialect = m.get("dialect", name if name in DIALECTS else None)
    if dialect is not None and dialect not in DIALECTS:
        p.add(f"{path}.dialect", f"expected one of {', '.join(DIALECTS)}, got {dialect!r}")
    elif dialect is None and demo:
        p.add(f"{path}.dialect", "--demo needs a dialect to simulate this provider: " + ", ".join(DIALECTS))
    rules = _params(m.get("params"), f"{path}.params", p)
    accepts = _accepts(m.get("accepts"), f"{path}.accepts", p)
    models: dict[str, ModelRoute] = {}
    entries = p.entries(m.get("models"), f"{path}.models")
    for model, spec in entries.items():
        route = _model(model, spec, f"{path}.models.{model}", rules, accepts, p)
        if demo or not _demo_only(spec):
            models[model] = route
    if "models" in m and not entries:
        p.add(f"{path}.models", "configure at least one model")
    return Provider(
        name=name,
        base_url=base_url,
        keys=_keys(name, m.get("keys"), f"{path}.keys", p, demo=demo),
        models=MappingProxyType(models),
        dialect=dialect,
        priority=p.integer(m.get("priority"), f"{path}.priority", 1, lo=0),
        weight=p.number(m.get("weight"), f"{path}.weight", 1.0, lo=0.0),
        limits=p.limits(m.get("limits"), f"{path}.limits"),
        quota=p.allowance(m.get("quota"), f"{path}.quota"),
        forward_headers=_forward_headers(m.get("forward_headers"), f"{path}.forward_headers", p),
        stream_usage=p.boolean(m.get("stream_usage"), f"{path}.stream_usage", True),
        streaming=p.boolean(m.get("streaming"), f"{path}.streaming", True),
        probe=_probe(m.get("probe"), f"{path}.probe", models, p),
        tls=_tls(m.get("tls"), f"{path}.tls", p),
    )


def _tls(raw: Any, path: str, p: Problems) -> TLS:
    m = p.mapping(raw, path, ("ca_file",))
    ca_file = p.string(m.get("ca_file"), f"{path}.ca_file") or None
    if ca_file is not None:
        try:  # loaded now, so a missing or broken bundle stops the start, not the first call
            ssl.create_default_context(cafile=ca_file)
        except FileNotFoundError:
            p.add(f"{path}.ca_file", f"no such file: {ca_file}")
        except (OSError, ssl.SSLError) as exc:
            p.add(f"{path}.ca_file", f"cannot load {ca_file} as PEM certificates ({type(exc).__name__})")
    return TLS(ca_file=ca_file)


def _probe(raw: Any, path: str, models: Mapping[str, ModelRoute], p: Problems) -> Probe | None:
    if raw is None:
        return None
    m = p.mapping(raw, path, ("interval", "model"), required=("interval",))
    # A probe is a one-token chat request: it needs a chat model.
    chat = [name for name, route in models.items() if route.kind == "chat"]
    model = p.string(m.get("model"), f"{path}.model") or next(iter(chat), "")
    if models and not model:
        p.add(path, "this provider serves no chat model to probe with")
    elif models and model not in models:
        p.add(f"{path}.model", f"{model!r} is not one of this provider's models")
    elif model in models and models[model].kind != "chat":
        p.add(f"{path}.model", f"{model!r} is not a chat model (kind {models[model].kind}): a probe asks one")
    return Probe(interval=p.duration(m.get("interval"), f"{path}.interval", 60.0), model=model)


def _keys(provider: str, raw: Any, path: str, p: Problems, *, demo: bool) -> tuple[ProviderKey, ...]:
    keys: list[ProviderKey] = []
    items = p.items(raw, path)
    if raw is not None and not items:
        p.add(path, "configure at least one key")
    for i, item in enumerate(items):
        where = f"{path}[{i}]"
        if isinstance(item, dict):
            m = p.mapping(item, where, ("name", "key"), required=("name", "key"))
            name = p.string(m.get("name"), f"{where}.name") or f"{provider}-{i}"
            p.name(name, f"{where}.name", "key name")
            secret = p.string(m.get("key"), f"{where}.key")
            secret_path = f"{where}.key"
        else:
            name, secret, secret_path = f"{provider}-{i}", p.string(item, where), where
        if not secret and not demo:
            p.add(secret_path, "empty: set the provider key (usually through its ${VAR})")
        elif secret and not _PRINTABLE.match(secret):
            p.add(secret_path, "must be printable ASCII without spaces")
        if any(k.name == name for k in keys):
            p.add(where, f"duplicate key name {name!r}")
        keys.append(ProviderKey(name=name, secret=secret))
    return tuple(keys)


def _forward_headers(raw: Any, path: str, p: Problems) -> tuple[str, ...]:
    headers: list[str] = []
    for i, header in enumerate(p.strings(raw, path)):
        if not _HEADER.match(header):
            p.add(f"{path}[{i}]", f"{header!r} is not a header name")
        elif header.lower() in _UNFORWARDABLE:
            p.add(f"{path}[{i}]", f"{header} is never forwarded (client credentials or hop-by-hop)")
        else:
            headers.append(header)
    return tuple(headers)


def _model(
    name: str, raw: Any, path: str, provider_rules: ParamRules, accepts: frozenset[str] | None, p: Problems
) -> ModelRoute:
    m = p.mapping(raw, path, ("upstream", "price", "params", "accepts", "kind", "demo_only"))
    p.boolean(m.get("demo_only"), f"{path}.demo_only", False)
    kind = p.string(m.get("kind"), f"{path}.kind", "chat")
    if kind not in KINDS:
        p.add(f"{path}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    price = None
    if m.get("price") is not None:
        pm = p.mapping(
            m["price"], f"{path}.price", ("input", "cached_input", "output"), required=("input", "output")
        )
        price = Price(
            input=p.number(pm.get("input"), f"{path}.price.input", 0.0, lo=0.0),
            output=p.number(pm.get("output"), f"{path}.price.output", 0.0, lo=0.0),
            cached_input=(
                p.number(pm["cached_input"], f"{path}.price.cached_input", 0.0, lo=0.0)
                if pm.get("cached_input") is not None
                else None
            ),
        )
    return ModelRoute(
        name=name,
        upstream=p.string(m.get("upstream"), f"{path}.upstream", name, empty_ok=False) or name,
        params=provider_rules.then(_params(m.get("params"), f"{path}.params", p)),
        price=price,
        accepts=_accepts(m["accepts"], f"{path}.accepts", p) if "accepts" in m else accepts,
        kind=kind,
    )


def _demo_only(raw: Any) -> bool:
    """A model the config serves only under --demo (an example, named by no provider document)."""
    return isinstance(raw, dict) and raw.get("demo_only") is True


def _accepts(raw: Any, path: str, p: Problems) -> frozenset[str] | None:
    """`accepts`: the complete list of features taken (a model's list replaces its provider's);
    absent: everything, as a provider nobody described is assumed to take what it is sent."""
    if raw is None:
        return None
    features = p.strings(raw, path)
    for i, feature in enumerate(features):
        if feature not in FEATURES:
            p.add(f"{path}[{i}]", f"unknown feature {feature!r}; expected one of {', '.join(FEATURES)}")
    return frozenset(f for f in features if f in FEATURES)


def _params(raw: Any, path: str, p: Problems) -> ParamRules:
    m = p.mapping(raw, path, ("drop", "defaults", "allowed", "rename"))
    defaults = p.entries(m.get("defaults"), f"{path}.defaults")
    allowed: dict[str, tuple[Any, ...]] = {}
    for param, values in p.entries(m.get("allowed"), f"{path}.allowed").items():
        items = p.items(values, f"{path}.allowed.{param}")
        if not items:
            p.add(f"{path}.allowed.{param}", "list at least one allowed value")
        allowed[param] = tuple(items)
    rename: dict[str, str] = {}
    for src, dst in p.entries(m.get("rename"), f"{path}.rename").items():
        if isinstance(dst, str) and dst:
            rename[src] = dst
        else:
            p.add(f"{path}.rename.{src}", f"expected the provider's parameter name, got {dst!r}")
    return ParamRules(
        drop=frozenset(p.strings(m.get("drop"), f"{path}.drop")),
        defaults=MappingProxyType(defaults),
        allowed=MappingProxyType(allowed),
        rename=MappingProxyType(rename),
    )
