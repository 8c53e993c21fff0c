"""The ledger streams as `router ledger export` sees them: one consumer group per client stream.

Each client's settlement records are appended (settle.lua, field `r`) to `{c:<client>}:ledger`.
The exporter reads them through the consumer group GROUP as the one consumer CONSUMER: it runs
as a single process, so a fixed name lets a restarted exporter find, first thing, the entries
its predecessor read and never acknowledged (XREADGROUP from ID 0), before it asks for new
ones (`>`). Two exporters at once would share those pending entries: the sinks ignore a
record they already hold, so that costs work, not duplicates — but run one.

Trimming removes only what every sink has durably written: everything before the first entry
not yet acknowledged (XTRIM MINID). That entry is the smallest pending one, or else the one
after the group's last delivered entry. Both are read in that order (the group first, then
its pending list), so a read by anyone in between cannot make an unacknowledged entry look
trimmable.

Works against one Redis or a Redis Cluster: every command names one stream (one hash slot);
SCAN and INFO go to every master.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from ..base import StateError

GROUP = "router-ledger-export"
CONSUMER = "exporter"
"""One fixed consumer: the exporter runs as one process (see the module docstring)."""
TIMEOUT = 10.0
"""Seconds for one command: a batch of records is a few hundred kilobytes, and nobody waits on
the exporter but its own lag."""
_ERRORS = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    body: bytes | None
    """The record's JSON; None when the entry was deleted from the stream while still pending."""


@dataclass(frozen=True, slots=True)
class Batch:
    scope: str
    entries: tuple[Entry, ...]
    redelivered: bool
    """Entries read before and never acknowledged: some sinks may already hold them."""


def ledger_key(scope: str) -> str:
    return "{" + scope + "}:ledger"


def entry_ms(entry_id: str) -> int:
    """When Redis appended an entry (its ID's first part: Redis time in ms)."""
    return int(entry_id.split("-", 1)[0])


def next_id(entry_id: str) -> str:
    """The smallest ID after `entry_id`: XTRIM MINID of it removes `entry_id` and all before."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def open_streams(state_url: str) -> LedgerStreams:
    """The streams of a `state.url` (redis://, rediss://, redis+cluster://, rediss+cluster://)."""
    cluster = "+cluster://" in state_url
    return LedgerStreams(state_url.replace("+cluster://", "://", 1), cluster=cluster)


class LedgerStreams:
    def __init__(self, url: str, *, cluster: bool = False, timeout: float = TIMEOUT):
        # No retry loop here: the exporter backs off and tries the whole step again.
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._cluster = cluster
        self._redis: Any = (
            RedisCluster.from_url(url, **options) if cluster else aioredis.Redis.from_url(url, **options)
        )

    async def scopes(self) -> set[str]:
        """The scope of every ledger stream there is (clients since removed from the config too)."""
        keys = await self._do(self._scan())
        return {_text(key)[1 : _text(key).index("}")] for key in keys}

    async def _scan(self) -> list[Any]:
        return [key async for key in self._redis.scan_iter(match="{c:*}:ledger", _type="stream")]

    async def ensure_group(self, scope: str) -> None:
        """Create the group, from the stream's first entry (and the stream if there is none yet)."""
        with contextlib.suppress(_BusyGroup):
            await self._do(self._redis.xgroup_create(ledger_key(scope), GROUP, id="0", mkstream=True))

    async def read(self, scope: str, count: int) -> Batch:
        """Entries this consumer read and never acknowledged, if any; else new ones."""
        key = ledger_key(scope)
        for attempt in range(2):
            try:
                pending = await self._read(key, "0", count)
                if pending:
                    return Batch(scope, pending, redelivered=True)
                return Batch(scope, await self._read(key, ">", count), redelivered=False)
            except _NoGroup:
                if attempt:
                    raise StateError(f"no consumer group on {key}") from None
                # Redis restarted without the group (or the stream was deleted): start it again.
                await self.ensure_group(scope)
        raise AssertionError("unreachable")

    async def _read(self, key: str, start: str, count: int) -> tuple[Entry, ...]:
        reply = await self._do(self._redis.xreadgroup(GROUP, CONSUMER, {key: start}, count=count))
        return tuple(_entries(reply))

    async def ack(self, scope: str, ids: Sequence[str]) -> None:
        if ids:
            await self._do(self._redis.xack(ledger_key(scope), GROUP, *ids))

    async def trim(self, scope: str) -> None:
        """Remove every entry before the first one not yet acknowledged."""
        key = ledger_key(scope)
        last, pending = await self._progress(key)
        if last is None:
            return  # no group (yet): nothing was exported, nothing may go
        threshold = min([next_id(last), *pending], key=_id_order)
        if threshold != "0-1":
            await self._do(self._redis.xtrim(key, minid=threshold, approximate=False))

    async def oldest(self, scope: str) -> str | None:
        """The ID of the oldest entry not yet acknowledged (None: there is none)."""
        key = ledger_key(scope)
        last, pending = await self._progress(key)
        after = await self._do(self._redis.xrange(key, min="(" + last if last else "-", count=1))
        found = [*pending, *(_text(entry_id) for entry_id, _ in after)]
        return min(found, key=_id_order) if found else None

    async def _progress(self, key: str) -> tuple[str | None, list[str]]:
        """The group's last delivered ID (None: no group) and its smallest pending one, if any.
        In that order: an entry delivered in between is after `last`, so never taken for done."""
        try:
            groups = await self._do(self._redis.xinfo_groups(key))
        except _NoKey:
            return None, []  # no stream (Redis lost it, or nobody wrote one yet)
        last = next((_text(g["last-delivered-id"]) for g in groups if _text(g["name"]) == GROUP), None)
        if last is None:
            return None, []
        pending = await self._do(self._redis.xpending(key, GROUP))
        return last, [_text(pending["min"])] if pending["pending"] else []

    async def now_ms(self) -> int:
        """Redis's clock, the one stream IDs are made from."""
        seconds, micros = await self._do(self._redis.time())
        return int(seconds) * 1000 + int(micros) // 1000

    async def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes, summed over a cluster's masters; maxmemory 0: no limit."""
        if self._cluster:
            reply = await self._do(self._redis.info("memory", target_nodes=RedisCluster.PRIMARIES))
            infos = [reply] if "used_memory" in reply else list(reply.values())
        else:
            infos = [await self._do(self._redis.info("memory"))]
        return sum(int(i["used_memory"]) for i in infos), sum(int(i.get("maxmemory", 0)) for i in infos)

    async def aclose(self) -> None:
        await self._redis.aclose()

    async def _do(self, work: Any) -> Any:
        """One boundary for redis-py's errors: StateError, or a group condition the caller handles."""
        try:
            return await work
        except ResponseError as error:
            text = str(error)
            if text.startswith("BUSYGROUP"):
                raise _BusyGroup(text) from None
            if text.startswith("NOGROUP"):
                raise _NoGroup(text) from None
            if "no such key" in text:
                raise _NoKey(text) from None
            raise StateError(f"ResponseError: {text}") from None
        except _ERRORS as error:
            raise StateError(f"{type(error).__name__}: {error}") from None


class _BusyGroup(Exception):
    """XGROUP CREATE of a group that is already there."""


class _NoGroup(StateError):
    """A read of a stream (or group) that is not there."""


class _NoKey(StateError):
    """XINFO of a stream that is not there."""


def _entries(reply: Any) -> Iterable[Entry]:
    # RESP2: [[key, [(id, {field: value}), ...]]]; a deleted pending entry has no fields.
    for _, entries in reply or ():
        for entry_id, fields in entries:
            yield Entry(_text(entry_id), (fields or {}).get(b"r"))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
