"""A test server on an event loop of its own, in a thread: usable from sync tests, async tests
and a RouterThread alike. `with` starts it (once it listens) and stops it."""

from __future__ import annotations

import asyncio
import threading
from typing import Self


class LoopThread:
    def start_thread(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        """Listen, then `self.listening()`, then serve until `self._stop` is set."""
        raise NotImplementedError

    def listening(self) -> asyncio.Event:
        """Called by _serve once it listens: marks it ready, returns the event that stops it."""
        self._stop = asyncio.Event()
        self._ready.set()
        return self._stop
