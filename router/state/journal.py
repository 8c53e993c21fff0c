"""The journal: the file on local disk that keeps an outbox's settlements (state.journal).

Each settlement is one JSON line, appended with os.write, so it is in the page cache at once and
survives the process (SIGTERM, SIGKILL, a crash). fsync follows in batches, in a thread,
SYNC_AFTER after an append, so what a lost node costs is bounded by that.

Several processes may share the directory (`--workers`, a pod's next run): each holds its file
under an exclusive flock. A process starting takes over every file whose lock is free (its owner
stopped or died) with `stopped()`, and retires it (deleted once its own file is fsynced).

A journal mostly written to the store is replaced by a copy of what still waits: `copy()` writes
it, in a thread, to a file named `*.journal.partial` (so a process that dies meanwhile leaves
nothing a successor would read twice), and `Journal.install()` renames it into place. The old file
is deleted only once the new one is fsynced.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import secrets
import types
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .base import Settle

log = logging.getLogger("router.state")

SUFFIX = ".journal"
PARTIAL = ".partial"
"""Added to SUFFIX while a copy is being written: not a journal yet, never taken over."""
SYNC_AFTER = 0.02
"""Seconds from an append to its fsync: the appends of that time share one fsync."""
COPY_CHUNK = 1000
"""Settlements encoded and written at a time by copy(): a rewrite never holds them all as bytes."""


# -- one settlement, one line ---------------------------------------------------------------------


def encode(settle: Settle) -> bytes:
    """A JSON line with every field of the settlement; bytes as base64, so nothing is lost."""
    return orjson.dumps(settle, default=_bytes) + b"\n"


def decode(line: bytes) -> Settle:
    """The settlement of one line (ValueError, KeyError, TypeError or AttributeError if none).
    Field types come from the dataclass, so a field added to Settle is kept without a change here."""
    found = _revive(Settle, orjson.loads(line))
    if not isinstance(found, Settle):
        raise ValueError("not a settlement")
    return found


def parse(data: bytes) -> tuple[list[Settle], int]:
    """The settlements of a journal, and how many lines were unreadable (a write cut short)."""
    found, bad = [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            found.append(decode(line))
        except (ValueError, KeyError, TypeError, AttributeError):
            bad += 1
    return found, bad


def _bytes(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(type(value).__name__)


def _revive(kind: Any, value: Any) -> Any:
    return None if value is None else _reviver(kind)(value)


@functools.cache
def _reviver(kind: Any) -> Callable[[Any], Any]:
    """How a JSON value becomes a `kind` again (worked out once per type: typing is slow)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (inner,) = (k for k in typing.get_args(kind) if k is not type(None))
        return functools.partial(_revive, inner)
    if kind is bytes:
        return functools.partial(base64.b64decode, validate=True)
    if typing.get_origin(kind) is tuple:
        return tuple
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        hints = typing.get_type_hints(kind)
        fields = {f.name: _reviver(hints[f.name]) for f in dataclasses.fields(kind)}
        return lambda value: kind(**{k: fields[k](v) for k, v in value.items() if k in fields})
    return lambda value: value


# -- this process's file --------------------------------------------------------------------------


class Journal:
    """This process's journal file, under an exclusive flock for as long as it is open."""

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path, self._fd = _create(directory, SUFFIX)
        self._dirty = False
        self._torn = False
        """A write failed midway: the next one starts on a new line, so only that line is lost."""
        self._failing = False
        self._retired: list[tuple[int, Path]] = []
        """Files to delete (and close) once this one is fsynced: what they held is in it now."""
        self._syncer: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> bool:
        """Append whole lines; False when they could not be written (logged once per burst)."""
        if self._torn:
            data = b"\n" + data
        try:
            _write_all(self._fd, data)
        except OSError as error:
            self._torn = True
            if not self._failing:
                self._failing = True
                log.error(
                    "state: journal %s cannot be written (%s): settlements wait in memory only",
                    self.path,
                    error.strerror,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("state: journal %s is writable again", self.path)
        self._torn = False
        self._sync_soon()
        return True

    def empty(self) -> None:
        """Everything in it was written to the store."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as error:
            log.error("state: journal %s could not be emptied (%s)", self.path, error.strerror)
            return
        self._torn = False
        self._sync_soon()

    def install(self, copied: Path, fd: int, tail: bytes) -> bool:
        """Make `copied` (from copy(): what waited when it began) this journal's file, with `tail`
        (what was appended since) added; the old file is deleted once the new one is fsynced.
        False: it could not be (logged; the copy is deleted, the old file stays in use)."""
        path = copied.with_suffix("")  # outbox-….journal.partial -> outbox-….journal
        try:
            _write_all(fd, tail)
            os.rename(copied, path)
        except OSError as error:
            log.error("state: journal %s could not be rewritten (%s)", self.path, error.strerror)
            _remove(copied, fd)
            return False
        old = self._fd, self.path
        self.path, self._fd, self._torn = path, fd, False
        self.retire(*old)
        return True

    def retire(self, fd: int, path: Path) -> None:
        """Delete this (locked) file once this journal is fsynced."""
        self._retired.append((fd, path))
        self._sync_soon()

    async def sync(self) -> None:
        """Return once everything written so far is fsynced."""
        if self._syncer is not None:
            await asyncio.shield(self._syncer)
        if self._dirty:
            await self._sync()

    def close(self, *, keep: bool) -> None:
        """Release the file (`keep`: it holds settlements, for the next start to take over), or
        delete it when nothing waits. After sync(): what is left to fsync is fsynced here."""
        if self._dirty or self._retired:
            self._sync_in_place()
        if keep:
            os.close(self._fd)
        else:
            _remove(self.path, self._fd)
        self._fd = -1

    def _sync_soon(self) -> None:
        self._dirty = True
        if self._syncer is not None and not self._syncer.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool, a test): fsync now
            self._sync_in_place()
            return
        self._syncer = loop.create_task(self._sync_later())

    async def _sync_later(self) -> None:
        while self._dirty:
            await asyncio.sleep(SYNC_AFTER)
            await self._sync()

    async def _sync(self) -> None:
        fd, retired = self._sync_started()
        try:
            await asyncio.to_thread(_fsync, fd, self.directory if retired else None)
        except OSError as error:
            return self._sync_failed(error, retired)
        if retired:  # in the thread too: unlinking a file of a hundred megabytes takes a while
            await asyncio.to_thread(_remove_all, retired)

    def _sync_in_place(self) -> None:
        fd, retired = self._sync_started()
        try:
            _fsync(fd, self.directory if retired else None)
        except OSError as error:
            return self._sync_failed(error, retired)
        _remove_all(retired)

    def _sync_started(self) -> tuple[int, list[tuple[int, Path]]]:
        """What this fsync covers: the file as written so far, and the files it replaces."""
        self._dirty = False
        retired, self._retired = self._retired, []
        return self._fd, retired

    def _sync_failed(self, error: OSError, retired: list[tuple[int, Path]]) -> None:
        log.error("state: journal %s could not be fsynced (%s)", self.path, error.strerror)
        self._retired = retired + self._retired  # kept until this file is known durable


def copy(directory: Path, settles: Sequence[Settle]) -> tuple[Path, int]:
    """A new file of this process's, locked and fsynced, holding `settles`: a journal's rewrite,
    for Journal.install. Made in a thread: encoding tens of thousands of settlements (their
    stored answers as base64) must not hold the event loop. OSError: nothing is left behind."""
    path, fd = _create(directory, SUFFIX + PARTIAL)
    try:
        for start in range(0, len(settles), COPY_CHUNK):
            _write_all(fd, b"".join(encode(s) for s in settles[start : start + COPY_CHUNK]))
        os.fsync(fd)
    except OSError:
        _remove(path, fd)
        raise
    return path, fd


def discard(path: Path, fd: int) -> None:
    """Delete a copy that will not be installed."""
    _remove(path, fd)


def stopped(directory: Path, own: Path) -> Iterator[tuple[Path, int]]:
    """The journals in `directory` that no process holds (their owners stopped or died), each
    locked, oldest first. A copy such a process left unfinished is deleted: it only repeats
    what that process's journal holds."""
    for partial in directory.glob("*" + SUFFIX + PARTIAL):
        fd = _claim(partial)
        if fd is not None:
            _remove(partial, fd)
    others = [p for p in directory.glob("*" + SUFFIX) if p != own]
    for path in sorted(others, key=_age):
        fd = _claim(path)
        if fd is not None:
            yield path, fd


def read(fd: int) -> bytes:
    with open(fd, "rb", closefd=False) as file:
        return file.read()


def _create(directory: Path, suffix: str) -> tuple[Path, int]:
    """A new file of this process's, locked. A process taking over free files at that moment may
    lock and delete it before this one locks it: then try another name."""
    for _ in range(5):
        path = directory / f"outbox-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink:
                return path, fd
        except BlockingIOError:
            pass
        os.close(fd)
    raise OSError(f"no journal file could be created in {directory}")


def _claim(path: Path) -> int | None:
    """The file, locked, if no process holds it and it still exists; else None."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return None  # taken and deleted by another process meanwhile, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_nlink:
            return fd
    except OSError:
        pass  # held: its process is alive
    os.close(fd)
    return None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync(fd: int, directory: Path | None) -> None:
    os.fsync(fd)
    if directory is not None:  # files were created, renamed or are about to be deleted: their entries too
        entry = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(entry)
        finally:
            os.close(entry)


def _remove_all(files: list[tuple[int, Path]]) -> None:
    for fd, path in files:
        _remove(path, fd)


def _remove(path: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
    os.close(fd)  # after the unlink: the lock keeps other processes away until it is gone


def _age(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
