"""A scripted upstream for byte-level stream shapes no dialect produces on purpose.

Each request is answered with a chunked event stream played from a script of
(delay seconds, bytes) steps, on a real loopback socket, in a thread of its own; a connection
the client keeps alive is read for its next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

import orjson

from tests.threaded import LoopThread

Step = tuple[float, bytes]


def chunk(index: int = 0, finish: object = None, **delta: object) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "s",
                "object": "chat.completion.chunk",
                "model": "scripted",
                "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            }
        )
        + b"\n\n"
    )


class ScriptedUpstream(LoopThread):
    def __init__(self, script: Sequence[Step]):
        self.script = list(script)
        self.requests = 0
        self.closed = threading.Event()
        self.start_thread("scripted-upstream")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self) -> None:
        self._handlers: set[asyncio.Task[None]] = set()
        server = await asyncio.start_server(self._track, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        await self.listening().wait()
        server.close()
        for task in self._handlers:  # keep-alive connections from the router stay open otherwise
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await server.wait_closed()

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # a kept-alive connection's next request, until the client closes it
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                    b"transfer-encoding: chunked\r\n\r\n"
                )
                for delay, data in self.script:
                    if delay:
                        await asyncio.sleep(delay)
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.closed.set()
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
