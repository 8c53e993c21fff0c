"""A TCP relay between router and a redis-server that counts round trips, not commands.

Redis's INFO commandstats counts commands: a pipeline of two scripts and two scripts sent one
after the other look the same there. What a request waits for is round trips: on one
connection, a write to Redis that follows a reply (or opens the connection) starts one; more
bytes before the reply (a pipeline split across segments) belong to the same one. Each round
trip is recorded with a label taken when it starts (the tests pass the simulator's request
count, so a label says whether it came before or after the upstream call). It can also hold
Redis's replies back, to show what a request waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from tests.redis_rig import HOST

OPENING = 96
"""Bytes kept of each round trip's first write: enough for its first command and a script's SHA."""


class RoundTripRelay:
    def __init__(self, port: int, label: Callable[[], Any] = lambda: None):
        self._upstream = port
        self._label = label
        self.round_trips: list[Any] = []
        """The label of every round trip, in the order they started (all connections)."""
        self.openings: list[bytes] = []
        """The first bytes of each round trip, as round_trips: which command it began with."""
        self.reply_delay = 0.0
        """Seconds each reply is held before router gets it (Redis has done the work by then)."""
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)
        self._ready = threading.Event()
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RoundTripRelay:
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the relay did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server = await asyncio.start_server(self._relay, HOST, 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()  # not wait_closed(): router's pooled connections stay open until it stops
        for task in self._connections:
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            redis_in, redis_out = await asyncio.open_connection(HOST, self._upstream)
        except OSError:
            client_out.close()
            return
        try:
            # Cancelled by stop(): end normally, or asyncio (3.11) logs the cancellation as an error.
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump(client_in, client_out, redis_in, redis_out)
        finally:
            for writer in (client_out, redis_out):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self._connections.discard(task)

    async def _pump(
        self,
        client_in: asyncio.StreamReader,
        client_out: asyncio.StreamWriter,
        redis_in: asyncio.StreamReader,
        redis_out: asyncio.StreamWriter,
    ) -> None:
        waiting = [False]  # a request is out and its reply has not started yet

        async def to_redis() -> None:
            while data := await client_in.read(65536):
                if not waiting[0]:
                    waiting[0] = True
                    self.round_trips.append(self._label())
                    self.openings.append(data[:OPENING])
                redis_out.write(data)
                await redis_out.drain()
            redis_out.write_eof()

        async def to_client() -> None:
            while data := await redis_in.read(65536):
                waiting[0] = False
                if self.reply_delay:
                    await asyncio.sleep(self.reply_delay)
                client_out.write(data)
                await client_out.drain()
            client_out.write_eof()

        with contextlib.suppress(OSError):
            await asyncio.gather(to_redis(), to_client())


@contextlib.contextmanager
def relay_to(port: int, label: Callable[[], Any] = lambda: None) -> Iterator[RoundTripRelay]:
    relay = RoundTripRelay(port, label).start()
    try:
        yield relay
    finally:
        relay.stop()
