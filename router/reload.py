"""Reload providers.yaml without dropping a request: on SIGHUP, or when the file changes
(a Kubernetes ConfigMap is updated by swapping a symlink under the mounted path).

A new Runtime is built from the new config and swapped in; requests already running keep the
one they started with, which is retired once they have all finished (bounded by the request
deadline). A config that does not load is refused with its problems logged, and the old one
stays. Shared state is kept across a reload unless the `state` section changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as configuration
from . import logs, metrics
from .config import Config, ConfigError
from .runtime import Runtime

log = logging.getLogger("router.reload")

WATCH_EVERY = 2.0
"""Seconds between looks at the config file."""


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """Where the served config came from, so it can be read again."""

    path: str
    demo: bool = False
    upstreams: Mapping[str, str] | None = None
    """--demo: the simulators' base URLs, which replace the providers' (kept across reloads)."""
    demo_key: str = ""

    def load(self) -> Config:
        config = configuration.load(self.path, demo=self.demo)
        if self.upstreams is not None:
            config = config.with_upstreams(self.upstreams, self.demo_key)
        return config

    def fingerprint(self) -> bytes | None:
        try:
            return hashlib.sha256(Path(self.path).read_bytes()).digest()
        except OSError:
            return None


Start = Callable[[Config, Runtime | None], Coroutine[Any, Any, Runtime]]
Retire = Callable[[Runtime], Coroutine[Any, Any, None]]


class Reloader:
    def __init__(self, source: ConfigSource, current: Callable[[], Runtime], swap: Callable[[Runtime], None]):
        self._source = source
        self._current = current
        self._swap = swap
        self._lock = asyncio.Lock()
        self._seen = source.fingerprint()
        self.closing = False
        self.retiring: set[asyncio.Task[Any]] = set()
        """Reloads under way, and runtimes being retired."""

    async def reload(self, why: str, start: Start, retire: Retire) -> bool:
        async with self._lock:
            if self.closing:
                return False
            self._seen = self._source.fingerprint()
            old = self._current()
            try:
                config = self._source.load()
                new = await start(config, old)
            except ConfigError as error:
                return self._refused(why, problems=error.problems[:20])
            except Exception as error:  # a file cut mid-write, a URL that will not parse, ...
                # Only the kind of error: its text may quote the file (a key, a password).
                return self._refused(why, error=type(error).__name__)
            self._swap(new)
            metrics.RELOADS.labels("ok").inc()
            logs.event(
                log, logging.WARNING, "config reloaded", trigger=why,
                providers=len(config.providers), models=len(config.targets), clients=len(config.clients),
            )  # fmt: skip
            task = asyncio.get_running_loop().create_task(retire(old))
            self.retiring.add(task)
            task.add_done_callback(self.retiring.discard)
            return True

    def _refused(self, why: str, **details: Any) -> bool:
        metrics.RELOADS.labels("error").inc()
        logs.event(
            log, logging.ERROR, "config reload refused; the running config is kept", trigger=why, **details
        )
        return False

    def trigger(self, why: str, start: Start, retire: Retire) -> None:
        """From a signal handler: reload soon, in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.reload(why, start, retire))
        self.retiring.add(task)
        task.add_done_callback(self.retiring.discard)

    async def watch(self, start: Start, retire: Retire) -> None:
        """Reload when the file's content changes (not its mtime: a ConfigMap swap may keep it)."""
        while True:
            await asyncio.sleep(WATCH_EVERY)
            seen = self._source.fingerprint()
            if seen is not None and seen != self._seen:
                try:
                    await self.reload("file changed", start, retire)
                except Exception:  # the watcher outlives any one reload
                    log.exception("config reload failed")


async def drained(rt: Runtime, *, timeout: float) -> None:
    """Wait until the requests that started on `rt` have all finished and settled, or `timeout`."""
    deadline = time.monotonic() + timeout
    while (rt.active or rt.ledger.in_flight) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
