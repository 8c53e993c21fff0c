"""The Redis store (this package is the only redis-py user): one Lua script per atomic step.

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
import math
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import (
    ChildDeadlockedError,
    IncorrectPolicyType,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from ...config import LedgerRetention
from ...watchdog import PatientTimeout
from ..base import Answer, Ask, Intent, Settle, StateError, Used
from .calls import DEADLINE, Call, acquire_call, answer, settle_call, used
from .connection import CPackedConnection, closed_by_server

_PAGE = 1000
MAX_CONNECTIONS = 1024
"""Connections per replica: one request holds one for a round trip."""
PATIENCE = 8
"""At most this many state.timeouts for a call, when this process (not Redis) is what runs late."""
DEADLINE_MARGIN = 0.02
"""Seconds before state.timeout after which an acquire takes nothing: the caller may give up at
state.timeout, so this is left for the reply's way back and the clock offset's error."""
CLOCK_EVERY = 60.0
"""Seconds between reads of Redis TIME, to turn this process's clock into Redis's for deadlines."""
CLOCK_FAST = 0.002
"""A round trip this short gives an offset good to a millisecond, whatever came before."""
_REDIS_ERRORS = (RedisError, RedisClusterException, ChildDeadlockedError, IncorrectPolicyType, OSError)


def _script(name: str) -> str:
    return resources.files("router.state").joinpath("lua", name).read_text()


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        cluster: bool = False,
        timeout: float = 0.25,
        lease_ttl: float = 30.0,
        retention: float = 86400.0,
        replay_window: float = 3600.0,
        ledger_retention: LedgerRetention | None = None,
    ):
        options: dict[str, Any] = {
            # One try: the guard's breaker decides about retrying, not a hidden loop here.
            "retry": Retry(NoBackoff(), 0),
        }
        self._pool: Any = None
        """One server's connection pool (not a cluster's): what _round_trip's connections are made by."""
        if cluster:  # its default of 100 connections per node is less than the requests in flight
            options["max_connections"] = 10_000
            # Its sockets time out only at _do()'s cap: _do() judges a late reply by whether this
            # process or Redis ran late, as on one server (with state.timeout here, a CPU-bound
            # router read its own lateness as a cluster node's: the breaker opened for nothing).
            self._redis: Any = RedisCluster.from_url(
                url,
                socket_timeout=timeout * PATIENCE,
                socket_connect_timeout=timeout * PATIENCE,
                **options,
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
                connection_class=CPackedConnection,
                **options,
            )
            self._redis = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
            self._pool = pool
        self._idle: list[CPackedConnection] = []
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
        self._replay_window_ms = int(replay_window * 1000)
        self._ledger_retention = ledger_retention or LedgerRetention()
        self._acquire = self._redis.register_script(_script("acquire.lua"))
        self._settle = self._redis.register_script(_script("settle.lua"))
        self._renew = self._redis.register_script(_script("renew.lua"))
        self._recover = self._redis.register_script(_script("recover.lua"))
        self._clock_offset_ms = 0.0
        """Redis TIME minus this process's monotonic clock, in ms (deadlines are Redis time)."""
        self._clock_read_at = -CLOCK_EVERY
        self._clock_trip = float("inf")
        """The round trip the offset was read over, and when (monotonic s)."""
        self._clock_trip_at = -math.inf
        self._reading_clock: asyncio.Task[None] | None = None
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
        (answer,) = await self.acquire_all([ask])
        if isinstance(answer, StateError):
            raise answer
        return answer

    async def acquire_all(self, asks: Sequence[Ask]) -> list[Answer | StateError]:
        calls = [acquire_call(ask, self._lease_ttl_ms) for ask in asks]
        replies = await self._call_all(self._acquire, calls)
        return [r if isinstance(r, StateError) else answer(a, r) for a, r in zip(asks, replies, strict=True)]

    async def settle(self, settle: Settle) -> bool:
        return bool(await self._call(self._settle, *self._call_args(settle)))

    def _call_args(self, settle: Settle) -> Call:
        return settle_call(
            settle,
            retention_ms=self._retention_ms,
            replay_window_ms=self._replay_window_ms,
            ledger=self._ledger_retention,
        )

    async def settle_all(self, settles: Sequence[Settle]) -> list[bool | StateError]:
        calls = [self._call_args(settle) for settle in settles]
        replies = await self._call_all(self._settle, calls)
        return [r if isinstance(r, StateError) else bool(r) for r in replies]

    async def renew(
        self,
        scope: str,
        holds: Sequence[str],
        claims: Sequence[tuple[str, str]],
        intents: Sequence[tuple[str, int]] = (),
    ) -> None:
        tag = "{" + scope + "}"
        keys = [tag + ":leases", tag + ":live", tag + ":intents", *(f"{tag}:idem:{key}" for key, _ in claims)]
        args: list[Any] = [self._lease_ttl_ms, len(holds), len(intents), *holds]
        for key, relayed in intents:
            args += (key, relayed)
        await self._call(self._renew, keys, [*args, *(owner for _, owner in claims)])

    async def recover(self, scope: str, *, grace: float, limit: int) -> list[Intent]:
        tag = "{" + scope + "}"
        reply = await self._call(
            self._recover, [tag + ":live", tag + ":intents"], [int(grace * 1000), limit, self._lease_ttl_ms]
        )
        return [
            Intent(key.decode(), body, int(relayed) if relayed else -1)
            for key, body, relayed in zip(reply[0::3], reply[1::3], reply[2::3], strict=True)
        ]

    async def usage(self, scope: str, periods: Sequence[str]) -> dict[str, Used]:
        tag = "{" + scope + "}"
        found = {}
        for period in periods:
            found[period] = used(await self._do(self._redis.hgetall(f"{tag}:use:{period}")))
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
        return await self._do(self._run(script, keys, args))

    async def _call_all(self, script: Any, calls: Sequence[Call]) -> list[Any]:
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

    async def _pipelined(self, script: Any, calls: Sequence[Call]) -> list[Any]:
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
            if closed_by_server(conn):  # Redis restarted or dropped idle clients meanwhile
                await conn.disconnect()
            written = [self._with_deadline(command) for command in commands]
            await conn.send_packed_command(conn.pack_commands(written), check_health=False)
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
            return await self._do(self._run(script, keys, args))
        except StateError as error:
            return error

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """One script call (a cluster's), its deadline fixed as it starts: once it has a connection."""
        return await script(keys=keys, args=self._with_deadline(args))

    def _with_deadline(self, args: Sequence[Any]) -> Sequence[Any]:
        """`args` with DEADLINE replaced by when this call, written now, stops taking anything
        (as they are when there is none). Fixed at the write, not when the call was made: a
        wait for one of this process's own connections is this process's lateness, and must
        not make Redis refuse."""
        if DEADLINE not in args:
            return args
        deadline = self._deadline()
        return [deadline if a is DEADLINE else a for a in args]

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
        for script in (self._acquire, self._settle, self._renew, self._recover):
            await self._do(self._redis.script_load(script.script))
        await self._read_clock()
        self._ready = True

    def _deadline(self) -> int:
        """The Redis time (ms) after which an acquire written now takes nothing."""
        now = time.monotonic()  # not the wall clock: a step of it must not make every acquire late
        if now - self._clock_read_at > CLOCK_EVERY and self._reading_clock is None and self._ready:
            self._reading_clock = asyncio.get_running_loop().create_task(self._read_clock())
        allowed = max(self._timeout / 2, self._timeout - DEADLINE_MARGIN)
        return int((now + allowed) * 1000 + self._clock_offset_ms)

    async def _read_clock(self) -> None:
        """Redis TIME against this process's monotonic clock. A slow round trip (this process
        busy, or Redis) says little about when TIME was read: an offset is taken only from one
        about as fast as the fastest lately."""
        self._clock_read_at = time.monotonic()  # tried: the next try is a CLOCK_EVERY away
        try:
            before = time.monotonic()
            seconds, micros = await self._do(self._redis.time())
            after = time.monotonic()
        except StateError:
            return  # the last offset stands; the next acquire tries again
        finally:
            self._reading_clock = None
        trip = after - before
        stale = after - self._clock_trip_at > 10 * CLOCK_EVERY
        if trip <= max(2 * self._clock_trip, CLOCK_FAST) or stale:
            self._clock_offset_ms = (seconds + micros / 1e6 - (before + after) / 2) * 1000
            self._clock_trip, self._clock_trip_at = trip, after

    async def _do(self, work: Any) -> Any:
        # A call that runs out of time while this process was busy (its event loop late under a
        # CPU overload) is given more, up to PATIENCE x state.timeout: the reply may be sitting
        # unread behind hundreds of callbacks. Measured: at 500 in flight with a plain timeout,
        # answers from a Redis at 12 % CPU "timed out", and every budgeted request got 503.
        # The wait for a connection slot and the call are timed apart: an acquire's deadline is
        # fixed when it is written (_with_deadline), after the slot, and the caller must not
        # give up on it before then.
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with PatientTimeout(self._timeout, cap=self._timeout * PATIENCE):
                await self._slots.acquire()
            try:
                with PatientTimeout(self._timeout, cap=self._timeout * PATIENCE):
                    return await work
            finally:
                self._slots.release()
        except TimeoutError:
            waited = loop.time() - started
            raise StateError(f"TimeoutError: no answer within {waited:.2f}s") from None
        # One boundary for everything redis-py raises; four of its roots are not RedisErrors.
        except _REDIS_ERRORS as error:
            raise _state_error(error) from None
        finally:
            work.close()  # never started if the time (or a cancellation) came during the slot wait


def _state_error(error: BaseException) -> StateError:
    return StateError(f"{type(error).__name__}: {error}")
