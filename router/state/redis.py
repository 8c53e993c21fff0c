"""The Redis store (the only redis-py user): one Lua script per atomic step.

Every key of a scope carries the scope as its hash tag (`{c:search-team}:leases`), so each
script touches one hash slot and runs unchanged on Redis Cluster. Time comes from Redis
`TIME`, so replicas with drifting clocks still share one window. Sockets time out quickly:
a slow Redis must not become a slow router (guard.py decides what happens then).

Several steps of one request (its client's scope and its provider key's: different hash
slots) go out together: on one server as a non-transactional pipeline of EVALSHA calls, one
write and one read; on a cluster as concurrent calls, one per scope, whose nodes answer in
parallel. Not redis-py's cluster pipeline: with retries off (the guard decides about those)
a connection error there does not make the client re-learn the slot map, so after a failover
it would keep asking the old master; a single command does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ChildDeadlockedError,
    DataError,
    IncorrectPolicyType,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from ..watchdog import PatientTimeout
from .base import (
    CONCURRENCY_RETRY,
    Answer,
    Ask,
    Conflict,
    Granted,
    Limited,
    Replay,
    Reused,
    Settle,
    Spent,
    StateError,
    Stored,
    Used,
    Window,
)

_PAGE = 1000
MAX_CONNECTIONS = 1024
"""Connections per replica: one request holds one for a round trip."""
PATIENCE = 8
"""At most this many state.timeouts for a call, when this process (not Redis) is what runs late."""
_REDIS_ERRORS = (RedisError, RedisClusterException, ChildDeadlockedError, IncorrectPolicyType, OSError)


def _script(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


def period_ttl(period: str) -> int:
    """How long a period's counters live from its first usage (ms), so they outlive it: a day's
    for 3 days, a month's for 400."""
    if period == "total":
        return 0
    return (3 if len(period) == 10 else 400) * 86_400_000


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        timeout: float = 0.25,
        lease_ttl: float = 30.0,
        retention: float = 86400.0,
    ):
        options: dict[str, Any] = {
            # One try: the guard's breaker decides about retrying, not a hidden loop here.
            "retry": Retry(NoBackoff(), 0),
        }
        self._pool: Any = None
        """One server's connection pool (not a cluster's): what _round_trip's connections are made by."""
        if cluster:  # its default of 100 connections per node is less than the requests in flight
            options["max_connections"] = 10_000
            self._redis: Any = RedisCluster.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout, **options
            )
        else:
            # No socket_timeout: redis-py enforces it with asyncio.wait_for, a task per command
            # sent (py-spy: ~5 % of a request). _do() bounds each whole call instead, and
            # redis-py drops a connection whose call was cancelled midway.
            pool = aioredis.ConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS + 16,
                socket_timeout=None,
                # Connecting is bounded by _do() as well; a busy process must not fail it early.
                socket_connect_timeout=timeout * PATIENCE,
                connection_class=_CPackedConnection,
                **options,
            )
            self._redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
            self._pool = pool
        self._idle: list[_CPackedConnection] = []
        """Connections between the scripts' round trips: see _round_trip."""
        self._closing = False
        self._timeout = timeout
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        """A burst of answers settling at once waits here for a connection instead of failing:
        redis-py's pool raises MaxConnectionsError when full, which would read as "Redis down"
        (503s for budgeted clients; found by make bench at 500 in flight). A free slot costs no
        task switch, unlike redis-py's BlockingConnectionPool (a condition, two locks)."""
        self._lease_ttl_ms = int(lease_ttl * 1000)
        self._retention_ms = int(retention * 1000)
        self._acquire = self._redis.register_script(_script("acquire.lua"))
        self._settle = self._redis.register_script(_script("settle.lua"))
        self._renew = self._redis.register_script(_script("renew.lua"))
        self._cluster = cluster
        self._ready = False
        self._warming: asyncio.Task[None] | None = None

    @property
    def sends_now(self) -> bool:
        # Not a cluster: its calls are tasks of their own, which start a loop step later. On
        # one Redis the write goes out in the first step unless a connection must be opened
        # first (a burst past the connections open, or one Redis closed): then the answer may
        # leave just before it.
        return self._ready and not self._cluster

    async def acquire(self, ask: Ask) -> Answer:
        return _answer(ask, await self._call(self._acquire, *_acquire_call(ask, self._lease_ttl_ms)))

    async def acquire_all(self, asks: Sequence[Ask]) -> list[Answer | StateError]:
        calls = [_acquire_call(ask, self._lease_ttl_ms) for ask in asks]
        replies = await self._call_all(self._acquire, calls)
        return [r if isinstance(r, StateError) else _answer(a, r) for a, r in zip(asks, replies, strict=True)]

    async def settle(self, settle: Settle) -> bool:
        return bool(await self._call(self._settle, *_settle_call(settle, self._retention_ms)))

    async def settle_all(self, settles: Sequence[Settle]) -> list[bool | StateError]:
        calls = [_settle_call(settle, self._retention_ms) for settle in settles]
        replies = await self._call_all(self._settle, calls)
        return [r if isinstance(r, StateError) else bool(r) for r in replies]

    async def renew(self, scope: str, holds: Sequence[str], claims: Sequence[tuple[str, str]]) -> None:
        tag = "{" + scope + "}"
        keys = [tag + ":leases", *(f"{tag}:idem:{key}" for key, _ in claims)]
        await self._call(
            self._renew, keys, [self._lease_ttl_ms, len(holds), *holds, *(owner for _, owner in claims)]
        )

    async def usage(self, scope: str, periods: Sequence[str]) -> dict[str, Used]:
        tag = "{" + scope + "}"
        found = {}
        for period in periods:
            tokens, nanos = await self._do(self._redis.hmget(f"{tag}:use:{period}", "t", "n"))
            found[period] = Used(int(tokens or 0), int(nanos or 0))
        return found

    async def records(self, scope: str, *, since: float = 0.0) -> list[bytes]:
        key = "{" + scope + "}:ledger"
        start = f"{int(since * 1000)}-0"
        found: list[bytes] = []
        while True:
            page = await self._do(self._redis.xrange(key, min=start, count=_PAGE))
            found.extend(fields[b"r"] for _, fields in page)
            if len(page) < _PAGE:
                return found
            start = "(" + page[-1][0].decode()

    async def ping(self) -> None:
        await self._do(self._redis.ping())

    async def aclose(self) -> None:
        self._closing = True  # calls still in flight close their connections as they end
        idle, self._idle = self._idle, []
        try:  # each, whatever another does: an unclosed socket outlives the store
            await asyncio.gather(*(conn.disconnect() for conn in idle), return_exceptions=True)
        finally:
            await self._redis.aclose()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        if not self._ready:
            await self._warm_up()
        return await self._do(script(keys=keys, args=args))

    async def _call_all(self, script: Any, calls: Sequence[_Call]) -> list[Any]:
        """Each call's reply, or the StateError that stands for it; sent in one round trip."""
        try:
            if not self._ready:
                await self._warm_up()
            if self._cluster:
                return list(await asyncio.gather(*(self._reply(script, keys, args) for keys, args in calls)))
            replies = await self._pipelined(script, calls)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:  # Redis restarted (or was flushed) since the scripts were loaded: those did not run
                await self._reload()
                again = await self._pipelined(script, [calls[i] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except StateError as error:
            return [error] * len(calls)
        return [_state_error(r) if isinstance(r, ResponseError) else r for r in replies]

    async def _pipelined(self, script: Any, calls: Sequence[_Call]) -> list[Any]:
        # EVALSHA itself, not the Script object: that would ask SCRIPT EXISTS first, a round trip.
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
        return list(await self._do(self._round_trip(commands)))

    async def _round_trip(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Every command in one write, then each reply (an error reply in its place): what a
        non-transactional pipeline does, without redis-py's Pipeline object, whose setup,
        reset and retry wrapper cost ~8 % of a request (py-spy, full profile, c=64).

        On a connection kept here, not taken from redis-py's pool: its get and release (a
        lock, a deprecation wrapper, an event and connection-count metrics on each) were ~6 %
        of a request (py-spy, full, c=64). At most one connection per call in flight (the
        slots in _do bound those). A connection goes back whatever happened: redis-py drops
        the socket of one that failed or was cancelled midway, and the next call reconnects.
        """
        conn = self._idle.pop() if self._idle else self._pool.make_connection()
        try:
            if _closed_by_server(conn):  # Redis restarted or dropped idle clients meanwhile
                await conn.disconnect()
            await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as error:  # read whole: the next reply is still in order
                    replies.append(error)
            return replies
        finally:
            if self._closing:
                await conn.disconnect(nowait=True)
            else:
                self._idle.append(conn)

    async def _reply(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self._do(script(keys=keys, args=args))
        except StateError as error:
            return error

    async def _reload(self) -> None:
        if self._ready:  # the first to find the scripts gone loads them again; the others wait for it
            self._ready, self._warming = False, None
        await self._warm_up()

    async def _warm_up(self) -> None:
        """Connect and load the scripts once, before the first burst: a cold cluster client
        hit by many first calls at once loses some of them (measured: 2 of 60). Callers that
        arrive meanwhile share the one attempt, and its failure: none queues behind a timeout."""
        if self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._load_scripts())
        warming = self._warming
        try:
            await asyncio.shield(warming)
        finally:
            if warming.done() and (warming.cancelled() or warming.exception() is not None):
                self._warming = None  # the next call, once the guard lets one through, tries again

    async def _load_scripts(self) -> None:
        for script in (self._acquire, self._settle, self._renew):
            await self._do(self._redis.script_load(script.script))
        self._ready = True

    async def _do(self, work: Any) -> Any:
        # A call that runs out of time while this process was busy (its event loop late under a
        # CPU overload) is given more, up to PATIENCE x state.timeout: the reply may be sitting
        # unread behind hundreds of callbacks. Measured: at 500 in flight with a plain timeout,
        # answers from a Redis at 12 % CPU "timed out", and every budgeted request got 503.
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with PatientTimeout(self._timeout, cap=self._timeout * PATIENCE):
                async with self._slots:
                    return await work
        except TimeoutError:
            waited = loop.time() - started
            raise StateError(f"TimeoutError: no answer within {waited:.2f}s") from None
        # One boundary for everything redis-py raises; four of its roots are not RedisErrors.
        except _REDIS_ERRORS as error:
            raise _state_error(error) from None
        finally:
            work.close()  # never started if the time (or a cancellation) came during the slot wait


class _CPackedConnection(aioredis.Connection):
    """Commands packed by hiredis, in C. redis-py's asyncio connection packs them in Python
    (its sync one uses hiredis): with two scripts of ~20 arguments per request that was ~12 %
    of the router's CPU in py-spy at concurrency 64."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if type(args[0]) is str and " " in args[0]:  # "SCRIPT LOAD": the server wants the words apart
            args = (*args[0].encode().split(), *args[1:])
        try:  # hiredis writes floats as repr() does, as redis-py does (checked on 200,000 values)
            return [hiredis.pack_command(args)]
        except TypeError as error:  # None, bool, ...: as redis-py's encoder refuses them
            raise DataError(str(error)) from None

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        """One buffer for the whole round trip; redis-py's own loops over every chunk in Python
        to cut the buffer in pieces, for a socket write it makes in one call anyway."""
        return [b"".join([self.pack_command(*command)[0] for command in commands])]


def _closed_by_server(conn: aioredis.Connection) -> bool:
    """The server closed this idle connection (its reader saw the end, or a reset): a write to it
    would fail the call, not reconnect. redis-py's pool checks the same before handing one out,
    and also refuses one with unread data, which cannot happen here: every reply is read."""
    reader = conn._reader  # redis-py's own stream reader: None once disconnected
    return reader is not None and (reader.at_eof() or reader.exception() is not None)


_Call = tuple[list[str], list[Any]]
"""A script's keys and arguments."""


def _state_error(error: BaseException) -> StateError:
    return StateError(f"{type(error).__name__}: {error}")


def _acquire_call(ask: Ask, lease_ttl_ms: int) -> _Call:
    tag = "{" + ask.scope + "}"
    claim = ask.claim
    keys = [
        tag + ":gcra",
        tag + ":leases",
        f"{tag}:use:{ask.period}",
        f"{tag}:idem:{claim.key if claim else ''}",
        tag + ":held",
    ]
    args = [
        ask.rpm,
        ask.tpm,
        ask.concurrency,
        ask.tokens,
        ask.allowance_tokens,
        ask.allowance_nanos,
        ask.hold if ask.lease else "",
        lease_ttl_ms,
        1 if claim else 0,
        claim.body_hash if claim else "",
        claim.owner if claim else "",
        int(CONCURRENCY_RETRY * 1000),
        ask.on_exceed,
        ask.cost_nanos,
        ask.prompt,
        ask.n,
        repr(ask.price_input),  # exactly the float the memory store computes with
        repr(ask.price_output),
    ]
    return keys, args


def _answer(ask: Ask, reply: Any) -> Answer:
    kind = reply[0]
    if kind == b"granted":
        if len(reply) > 6:  # capped to fit the budget: a smaller reservation, in its own hold
            hold = reply[7].decode() if ask.lease else None
            return Granted(_window(reply[2:6]), hold, int(reply[1]), capped=int(reply[6]))
        return Granted(_window(reply[2:6]), ask.hold if ask.lease else None, int(reply[1]))
    if kind == b"limited":
        return Limited(reply[1].decode(), int(reply[2]) / 1000, _window(reply[3:7]))
    if kind == b"spent":
        return Spent(int(reply[1]), int(reply[2]))
    if kind == b"conflict":
        return Conflict()
    if kind == b"reused":
        return Reused()
    owner, status, stream, body = reply[1:5]
    return Replay(Stored(owner.decode(), int(status), stream == b"1", body))


def _settle_call(settle: Settle, retention_ms: int) -> _Call:
    tag = "{" + settle.scope + "}"
    stored = settle.stored
    keys = [
        tag + ":gcra",
        tag + ":leases",
        f"{tag}:done:{settle.settlement_key}",
        f"{tag}:idem:{settle.claim_key or ''}",
        tag + ":ledger",
        tag + ":held",
        *(f"{tag}:use:{p}" for p in settle.periods),
    ]
    args = [
        settle.hold or "",
        settle.tpm,
        settle.tpm_delta,
        settle.tokens,
        settle.cost_nanos,
        settle.record or b"",
        settle.settlement_key,
        1 if settle.claim_key is not None else 0,
        1 if stored is not None else 0,
        stored.status if stored else 0,
        1 if stored and stored.stream else 0,
        stored.body if stored else b"",
        retention_ms,
        settle.claim_hash,
        settle.rpm,
        settle.rpm_delta,
        *(period_ttl(p) for p in settle.periods),
    ]
    return keys, args


def _window(values: Sequence[Any]) -> Window:
    rpm_remaining, rpm_reset, tpm_remaining, tpm_reset = (int(v) for v in values)
    return Window(rpm_remaining, rpm_reset / 1000, tpm_remaining, tpm_reset / 1000)
