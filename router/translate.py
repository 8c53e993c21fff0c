"""Pure: the client's request body x one target's rules -> the body that provider gets.

Every attempt translates from the client's original body, so a retry on another provider
never sees the previous provider's changes.
"""

from __future__ import annotations

from typing import Any

from .config import ModelRoute, Target
from .errors import ParamNotAllowed
from .types import JSON


def for_target(body: JSON, target: Target) -> JSON:
    """`body` as `target` is sent it: its model's rules, and a stream where its provider
    streams (a whole answer is then gathered from it: attempt.py)."""
    provider, route = target.provider, target.route
    as_stream = provider.streaming and route.kind == "chat"  # embeddings and rerank answer whole
    return to_upstream(body, route, stream_usage=provider.stream_usage, as_stream=as_stream)


def to_upstream(body: JSON, route: ModelRoute, *, stream_usage: bool, as_stream: bool = False) -> JSON:
    """Apply `route.params` (drop, defaults, allowed, rename), set the upstream model id,
    ask for a stream if `as_stream`, and ask for usage in streams where the provider takes
    `stream_options`.

    Raises ParamNotAllowed when the client set a value this model does not take.
    """
    out = dict(body)
    out["model"] = route.upstream
    if as_stream:
        out["stream"] = True
    rules = route.params
    if rules:
        for name in rules.drop:
            out.pop(name, None)
        for name, value in rules.defaults.items():
            out.setdefault(name, value)
        for name, allowed in rules.allowed.items():
            if name in out and not _is_allowed(out[name], allowed):
                raise ParamNotAllowed(
                    f"'{name}' = {_show(out[name])} is not supported by {route.name}; "
                    f"allowed: {', '.join(_show(v) for v in allowed)}",
                    param=name,
                )
        for name, upstream_name in rules.rename.items():
            if name in out:
                out[upstream_name] = out.pop(name)
    if out.get("stream"):
        if stream_usage:
            # Usage is how a stream is settled; the relay hides the usage-only chunk again
            # from clients that did not ask for it.
            options = out.get("stream_options")
            out["stream_options"] = {**options, "include_usage": True} if options else {"include_usage": True}
        else:
            out.pop("stream_options", None)
    return out


def cap_completion(body: JSON, limit: int) -> JSON:
    """`body` with its completion allowance lowered to `limit` tokens per choice (a budget's
    cap): `max_completion_tokens` or `max_tokens`, whichever the client sent (both, if it sent
    both), else `max_completion_tokens`. Each target's rules (a rename to max_tokens) apply
    after, in to_upstream, as to the client's own value."""
    out = dict(body)
    names = [name for name in ("max_completion_tokens", "max_tokens") if name in out]
    for name in names or ["max_completion_tokens"]:
        value = out.get(name)
        out[name] = min(value, limit) if type(value) is int else limit
    return out


def client_wants_usage(body: JSON, *, every_chunk: bool = False) -> bool:
    """Did the client itself ask for the usage chunk of a stream (or usage on every chunk)?"""
    options = body.get("stream_options")
    return (
        isinstance(options, dict)
        and options.get("chunk_include_usage" if every_chunk else "include_usage") is True
    )


def _is_allowed(value: Any, allowed: tuple[Any, ...]) -> bool:
    # `True == 1` in Python; a boolean rule must not admit 1, nor a numeric rule True.
    is_bool = isinstance(value, bool)
    return any(value == a and isinstance(a, bool) == is_bool for a in allowed)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
