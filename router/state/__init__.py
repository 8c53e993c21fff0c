"""Shared state: the Store protocol, its memory and Redis backends, and the guard around them.

Backends are chosen by the scheme of `state.url`, from a registry (like uvicorn's
HTTP_PROTOCOLS): adding one never touches the code that uses the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from ..config import State
from .base import (
    Answer,
    Ask,
    Claim,
    Conflict,
    Granted,
    Intent,
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
from .outbox import Outbox

log = logging.getLogger("router.state")


def _memory(state: State) -> Store:
    return MemoryStore(retention=state.retention, ledger_file=state.ledger_file, lease_ttl=state.lease_ttl)


def _redis(state: State, *, cluster: bool = False) -> Store:
    from .redis import RedisStore  # redis-py is imported only by processes that use Redis

    url = state.url.replace("+cluster://", "://", 1)
    return RedisStore(
        url,
        cluster=cluster,
        timeout=state.timeout,
        lease_ttl=state.lease_ttl,
        retention=state.retention,
        replay_window=state.replay_window,
        ledger_retention=state.ledger_retention,
    )


BACKENDS: dict[str, Callable[[State], Store]] = {
    "memory": _memory,
    "redis": _redis,
    "rediss": _redis,
    "redis+cluster": lambda state: _redis(state, cluster=True),
    "rediss+cluster": lambda state: _redis(state, cluster=True),
}


def open_store(
    state: State, *, on_error: Callable[[str], None] = lambda op: None, outbox: Outbox | None = None
) -> GuardedStore:
    """The configured store, guarded. `outbox`: where settlements wait while it is down (from
    open_outbox, or a replaced store's on a reload); by default in memory only."""
    store = BACKENDS[state.url.split("://", 1)[0]](state)
    if outbox is None:
        outbox = Outbox(limit=state.journal_max)
    elif outbox.directory != _journal_of(state):
        log.warning(
            "state: state.journal changed; this process keeps its journal in %s until it restarts",
            outbox.directory,
        )
    return GuardedStore(
        store,
        replicas=state.replicas,
        closed=state.on_failure == "closed",
        on_error=on_error,
        outbox=outbox,
    )


def open_outbox(state: State, *, on_drop: Callable[[int], None] = lambda n: None) -> Outbox:
    """The serving process's outbox (one per process: a reload passes it on, see open_store).
    With state.journal, journaled there, holding what stopped processes' journals held.
    Raises OSError when the journal cannot be opened: durability was asked for."""
    directory = _journal_of(state)
    if directory is None:
        if not state.url.startswith("memory://"):
            log.warning(
                "state: state.journal is not set: settlements that cannot reach the store wait in "
                "this process's memory only, and are lost if it stops or dies before the store answers"
            )
        return Outbox(limit=state.journal_max, on_drop=on_drop)
    try:
        return Outbox.open(directory, limit=state.journal_max, on_drop=on_drop)
    except OSError as error:
        log.error("state: the journal in %s cannot be opened: %s", directory, error)
        raise


def _journal_of(state: State) -> Path | None:
    """The journal directory; none for memory://, whose store is never unreachable."""
    if state.journal is None or state.url.startswith("memory://"):
        return None
    return Path(state.journal)


__all__ = [
    "BACKENDS",
    "Answer",
    "Ask",
    "Claim",
    "Conflict",
    "Granted",
    "GuardedStore",
    "Intent",
    "Limited",
    "MemoryStore",
    "Outbox",
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
    "open_outbox",
    "open_store",
]
