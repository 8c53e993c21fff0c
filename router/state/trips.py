"""Round trips to one Redis, shared once they queue: group commit for script calls.

Every request makes one round trip before its upstream call and one after. Made one by one,
at concurrency 64 that is a pool checkout, a write and a read per request each time, on both
sides of the socket (py-spy, full profile: ~17 % of the router's CPU). Here at most `at_once`
round trips run at a time. A call that finds them all busy waits in a queue, and the first to
finish sends the whole queue as one: one write, the replies read in order, each caller handed
its own. A lone request never waits: with nothing in flight its round trip goes out at once,
as it did before.

Calls leave in the order they were made (a call only goes out directly when the queue is
empty), so Redis runs this process's steps in that order: a settlement made before a
request's next admission is ahead of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

Commands = Sequence[tuple[Any, ...]]
Send = Callable[[Commands], Coroutine[Any, Any, list[Any]]]


class RoundTrips:
    def __init__(
        self,
        send: Send,
        *,
        at_once: int,
        bounded: Callable[[Coroutine[Any, Any, list[Any]]], Awaitable[list[Any]]],
    ):
        self._send = send
        """Writes the commands and reads every reply (an error reply in its place)."""
        self._bounded = bounded
        """Puts a time limit on a shared round trip, which no single caller's limit covers."""
        self._at_once = at_once
        self._busy = 0
        self._queue: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._flushing: set[asyncio.Task[None]] = set()

    async def run(self, commands: Commands) -> list[Any]:
        """The replies to `commands`, in order. The caller bounds the wait; if it gives up
        before its commands were sent, they are not sent."""
        if self._busy < self._at_once:  # then the queue is empty: _next() empties it first
            self._busy += 1
            try:
                return await self._send(commands)
            finally:
                self._busy -= 1
                self._next()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        return await future

    def _next(self) -> None:
        if not self._queue or self._busy >= self._at_once:
            return
        batch = [(commands, future) for commands, future in self._queue if not future.done()]
        self._queue = []
        if batch:
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[Commands, asyncio.Future[list[Any]]]]) -> None:
        try:
            replies = await self._bounded(self._send([c for commands, _ in batch for c in commands]))
        except Exception as error:  # a StateError: each caller's, as if it had gone alone
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
        except BaseException:  # cancelled at shutdown
            for _, future in batch:
                future.cancel()
            raise
        else:
            start = 0
            for commands, future in batch:
                if not future.done():  # its caller gave up while the batch was out
                    future.set_result(replies[start : start + len(commands)])
                start += len(commands)
        finally:
            self._busy -= 1
            self._next()
