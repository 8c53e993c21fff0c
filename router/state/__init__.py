"""Shared state: the Store protocol, its memory and Redis backends, and the guard around them.

Backends are chosen by the scheme of `state.url`, from a registry (like uvicorn's
HTTP_PROTOCOLS): adding one never touches the code that uses the store.
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import State
from .base import (
    Answer,
    Ask,
    Claim,
    Conflict,
    Granted,
    Limited,
    Replay,
    Reused,
    Settle,
    Spent,
    StateError,
    Store,
    Stored,
    Used,
    Window,
)
from .guard import GuardedStore, StateUnavailableError
from .memory import MemoryStore


def _memory(state: State) -> Store:
    return MemoryStore(retention=state.retention, ledger_file=state.ledger_file)


def _redis(state: State, *, cluster: bool = False) -> Store:
    from .redis import RedisStore  # redis-py is imported only by processes that use Redis

    url = state.url.replace("+cluster://", "://", 1)
    return RedisStore(url, cluster=cluster, timeout=state.timeout, retention=state.retention)


BACKENDS: dict[str, Callable[[State], Store]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": lambda state: _redis(state, cluster=True),
    "rediss+cluster": lambda state: _redis(state, cluster=True),
}


def open_store(state: State, *, on_error: Callable[[str], None] = lambda op: None) -> GuardedStore:
    store = BACKENDS[state.url.split("://", 1)[0]](state)
    return GuardedStore(
        store, replicas=state.replicas, closed=state.on_failure == "closed", on_error=on_error
    )


__all__ = [
    "BACKENDS",
    "Answer",
    "Ask",
    "Claim",
    "Conflict",
    "Granted",
    "GuardedStore",
    "Limited",
    "MemoryStore",
    "Replay",
    "Reused",
    "Settle",
    "Spent",
    "StateError",
    "StateUnavailableError",
    "Store",
    "Stored",
    "Used",
    "Window",
    "open_store",
]
