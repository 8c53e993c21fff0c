"""The outbox: settlements waiting for the shared store, oldest first, until GuardedStore.flush
writes them. Each is applied once per settlement key, so one written twice (its reply lost, or
replayed from a journal after a crash) changes nothing.

With a journal directory (state.journal; the file itself is journal.py), each settlement is also
appended to this process's own file there before the request's answer leaves, and at start the
files of stopped processes are taken over. The file is emptied once the outbox drains, and
rewritten with what still waits once most of it has been written. That rewrite encodes and writes
in a thread (up to `limit` settlements, their stored answers as base64: seconds of CPU on the
event loop) while appends and pops go on; what is appended meanwhile is added to the new file
when it is installed. Bounded: past `limit` settlements a settlement is dropped, logged once per
burst and counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import journal
from .base import Settle
from .journal import SUFFIX as SUFFIX  # re-exported: what a journal file's name ends with
from .journal import Journal, encode

log = logging.getLogger("router.state")

COMPACT_AT = 1000
"""Settlements written (but still in the file) before it is rewritten without them, once they
also outnumber those still waiting: the file stays within about twice the outbox."""


@dataclasses.dataclass(eq=False)
class _Rewrite:
    """A rewrite of the journal under way: `kept` (what waited when it began) is copied in a
    thread; what is appended meanwhile goes to the old file and to `appended`, and is added to the
    copy when it is installed."""

    kept: list[Settle]
    appended: list[Settle] = dataclasses.field(default_factory=list)
    stale: bool = False
    """The outbox drained meanwhile: the old file, emptied, is the smaller one."""
    task: asyncio.Task[None] | None = None


class Outbox:
    """Settlements waiting for the store, oldest first: in memory, and in a journal if it has one."""

    def __init__(
        self,
        *,
        limit: int = 100_000,
        on_drop: Callable[[int], None] = lambda n: None,
        journal: Journal | None = None,
    ):
        self._items: deque[Settle] = deque()
        self._limit = limit
        self._on_drop = on_drop
        self._journal = journal
        self._written = 0
        """Settlements popped (written to the store) whose lines are still in the file."""
        self._rewrite: _Rewrite | None = None
        self._rewrite_after = 0
        """After a failed rewrite, `_written` before the next try: not one try per pop on a full disk."""
        self._dropped = 0
        """Dropped in the current burst (the outbox full): logged once when it starts and ends."""
        self.flushing = asyncio.Lock()
        """One flush at a time: two (an old runtime's keeper beside a new one's) would each
        write the head of the outbox and pop what the other had not written."""

    @classmethod
    def open(
        cls, directory: str | Path, *, limit: int, on_drop: Callable[[int], None] = lambda n: None
    ) -> Outbox:
        """An outbox journaled in `directory`, holding what the journals of stopped processes held."""
        own = Journal(Path(directory))
        outbox = cls(limit=limit, on_drop=on_drop, journal=own)
        for path, fd in journal.stopped(own.directory, own.path):
            outbox._take_over(path, fd)
        return outbox

    @property
    def path(self) -> Path | None:
        """The journal file, if there is one."""
        return None if self._journal is None else self._journal.path

    @property
    def directory(self) -> Path | None:
        return None if self._journal is None else self._journal.directory

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Settle]:
        return iter(self._items)

    @property
    def head(self) -> Settle:
        """The oldest settlement (IndexError when empty)."""
        return self._items[0]

    def append(self, settle: Settle) -> None:
        self.extend((settle,))

    def extend(self, settles: Iterable[Settle]) -> None:
        self._add(list(settles))

    def popleft(self) -> Settle:
        """Remove the oldest, once it has been written to the store."""
        settle = self._items.popleft()
        if self._dropped and len(self._items) < self._limit:
            log.error("state: outbox has room again; %d settlement(s) were dropped", self._dropped)
            self._dropped = 0
        if self._journal is not None:
            self._written += 1
            if not self._items:
                self._journal.empty()
                self._written = self._rewrite_after = 0
                if self._rewrite is not None:
                    self._rewrite.stale = True
            elif self._rewrite is None and self._written >= max(
                COMPACT_AT, len(self._items), self._rewrite_after
            ):
                self._start_rewrite()
        return settle

    async def sync(self) -> None:
        """Return once every settlement appended so far is fsynced (a rewrite under way installed)."""
        await self._rewritten()
        if self._journal is not None:
            await self._journal.sync()

    async def aclose(self) -> None:
        """Release the journal: kept (fsynced) while it holds settlements, deleted when empty."""
        await self._rewritten()
        if self._journal is not None:
            await self._journal.sync()
            journal, self._journal = self._journal, None  # no await from here: nothing is appended meanwhile
            journal.close(keep=bool(self._items))

    def _add(self, settles: list[Settle]) -> bool:
        """Append as many as fit; True when all of them are in (and journaled, if journaling)."""
        room = max(0, self._limit - len(self._items))
        kept, dropped = settles[:room], len(settles) - room
        if dropped > 0:
            if not self._dropped:
                log.error(
                    "state: outbox full (%d settlements): dropping settlements until it drains", self._limit
                )
            self._dropped += dropped
            self._on_drop(dropped)
        self._items.extend(kept)
        if self._rewrite is not None:
            self._rewrite.appended.extend(kept)
        if self._journal is None or not kept:
            return dropped <= 0
        if not self._journal.write(b"".join(encode(s) for s in kept)):
            self._on_drop(len(kept))  # not durable: lost if this process stops before the store answers
            return False
        return dropped <= 0

    def _take_over(self, path: Path, fd: int) -> None:
        assert self._journal is not None
        try:
            settles, bad = journal.parse(journal.read(fd))
        except OSError as error:
            log.error("state: journal %s could not be read (%s); left in place", path, error.strerror)
            os.close(fd)
            return
        if bad:
            log.warning("state: journal %s: %d unreadable line(s) skipped (a write cut short)", path, bad)
        if self._add(settles):
            self._journal.retire(fd, path)  # deleted once its settlements are fsynced in ours
        else:
            os.close(fd)  # not all of them are safe in ours: it stays, for a later start
        if settles:
            log.warning(
                "state: took over %d settlement(s) from journal %s; written once the store answers",
                len(settles),
                path,
            )

    # -- rewriting the journal with what still waits ----------------------------------------------

    def _start_rewrite(self) -> None:
        """Copy what waits to a new file in a thread, then install it (no loop: a tool, at once)."""
        assert self._journal is not None
        rewrite = _Rewrite(list(self._items))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._install(rewrite, _copy(self._journal.directory, rewrite.kept))
            return
        self._rewrite = rewrite
        rewrite.task = loop.create_task(self._rewrite_in_thread(rewrite, self._journal.directory))

    async def _rewrite_in_thread(self, rewrite: _Rewrite, directory: Path) -> None:
        try:
            made = await asyncio.to_thread(_copy, directory, rewrite.kept)
        finally:
            # Cancelled (the loop is closing): the old file stays in use. A copy the thread
            # still finishes keeps its lock until this process exits; the next start deletes it.
            self._rewrite = None
        self._install(rewrite, made)

    def _install(self, rewrite: _Rewrite, made: tuple[Path, int] | OSError) -> None:
        self._rewrite = None
        if isinstance(made, OSError):
            log.error("state: journal %s could not be rewritten (%s)", self.path, made.strerror or made)
            self._rewrite_after = self._written + COMPACT_AT
            return
        path, fd = made
        if self._journal is None or rewrite.stale:
            journal.discard(path, fd)
            return
        tail = b"".join(encode(s) for s in rewrite.appended)
        if not self._journal.install(path, fd, tail):
            self._rewrite_after = self._written + COMPACT_AT
            return
        # The new file holds kept + appended, of which what was popped meanwhile is written.
        self._written = len(rewrite.kept) + len(rewrite.appended) - len(self._items)
        self._rewrite_after = 0

    async def _rewritten(self) -> None:
        """Return once no rewrite is under way."""
        while (rewrite := self._rewrite) is not None and rewrite.task is not None:
            await asyncio.wait([rewrite.task])  # neither cancelled with the caller nor raising


def _copy(directory: Path, settles: list[Settle]) -> tuple[Path, int] | OSError:
    try:
        return journal.copy(directory, settles)
    except OSError as error:
        return error
