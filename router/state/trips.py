"""Round trips to one Redis, shared once they queue: group commit for script calls.

Every request makes one round trip before its upstream call and one after. Made one by one,
at concurrency 64 that is a pool checkout, a write and a read per request each time, on both
sides of the socket (py-spy, full profile: ~17 % of the router's CPU). Here at most `at_once`
round trips run at a time. A call that finds them all busy waits in a queue, and the first to
finish sends the whole queue as one: one write, the replies read in order, each caller handed
its own. A lone request never waits: with nothing in flight its round trip goes out at once,
as it did before.

Calls are written in the order they were made: one goes out directly only while nothing is
queued, and a queue is taken whole by the flush that sends it, at its first step (callers
that come before that join it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from .base import StateError

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
        """A round trip's time limit, and its errors as StateError. It starts when the round
        trip does: time spent queued is bounded by the round trips ahead, each bounded so."""
        self._at_once = at_once
        self._busy = 0
        self._queue: list[tuple[Commands, asyncio.Future[list[Any]]]] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self._starting = False

    @property
    def direct(self) -> bool:
        """A call made now would be written at once, not queued."""
        return self._busy < self._at_once and not self._queue

    async def run(self, commands: Commands) -> list[Any]:
        """The replies to `commands`, in order, or a StateError. A caller that gives up before
        its commands were written (cancelled) is not sent."""
        if self.direct:
            self._busy += 1
            try:
                return await self._bounded(self._send(commands))
            finally:
                self._done()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((commands, future))
        return await future

    def _done(self, _: object = None) -> None:
        self._busy -= 1
        if self._queue and self._busy < self._at_once and not self._starting:
            self._busy += 1
            self._starting = True  # one flush takes the queue; a second would split it
            task = asyncio.get_running_loop().create_task(self._flush())
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)
            task.add_done_callback(self._cancelled_early)
            task.add_done_callback(self._done)  # also when cancelled before its first step

    def _cancelled_early(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._starting = False  # harmless if it had started: then it was False already

    async def _flush(self) -> None:
        self._starting = False
        batch = [(commands, future) for commands, future in self._queue if not future.done()]
        self._queue = []
        if not batch:
            return
        try:
            replies = await self._bounded(self._send([c for commands, _ in batch for c in commands]))
        except Exception as error:  # each caller's, as if it had gone alone
            for _, future in batch:
                if not future.done():
                    future.set_exception(StateError(str(error)))
        except BaseException:  # cancelled at shutdown: the callers' settlements go to the outbox
            for _, future in batch:
                if not future.done():
                    future.set_exception(StateError("the shared round trip was cancelled"))
            raise
        else:
            start = 0
            for commands, future in batch:
                if not future.done():  # its caller gave up while the batch was out
                    future.set_result(replies[start : start + len(commands)])
                start += len(commands)
