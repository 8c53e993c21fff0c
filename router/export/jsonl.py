"""The JSONL sink: one file a day, `ledger-YYYY-MM-DD.jsonl`, for those without a database.

A record goes to the file of its `started_at` day (UTC), as one line, appended and fsynced
before the batch counts as written (and the directory fsynced when a file is new). Files are
only ever appended to, so they can be shipped or archived as they grow; yesterday's is done
once no record of yesterday is left to export.

Exactly once, as far as redeliveries go: a batch read again after a crash (or after another
sink failed) may be partly in the files already. Keys this process wrote and the stream has
not acknowledged yet are remembered; any other redelivered key is looked for in its day's
file (a scan of that file: it happens only after a restart with records pending). A write
that fails (a full disk, an I/O error) is cut back off the file at once, so its records are
written again whole, and a line cut short by a crash mid-write is removed before the first
append after a start: neither record was acknowledged, so each comes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from .entries import Record, SinkError, started_at
from .report import ANONYMOUS

_KEY_FIRST = b'{"settlement_key":"'
_CHUNK = 1 << 20


def day_file(directory: Path, record: Record) -> Path:
    return directory / f"ledger-{record.started_at.date().isoformat()}.jsonl"


class JsonlSink:
    name = "jsonl"

    def __init__(self, directory: str):
        self._dir = Path(directory)
        self._written: set[str] = set()
        """Keys in the files that the stream has not acknowledged yet (this process's writes)."""
        self._mended: set[Path] = set()
        """Files whose last line is known to be whole."""

    async def write(self, records: Sequence[Record], *, redelivered: bool) -> int:
        try:
            return await asyncio.to_thread(self._write, records, redelivered)
        except OSError as error:
            raise SinkError(f"{type(error).__name__}: {error}") from None

    def acknowledged(self, records: Sequence[Record]) -> None:
        self._written.difference_update(r.key for r in records)

    async def aclose(self) -> None:
        pass

    def _write(self, records: Sequence[Record], redelivered: bool) -> int:
        self._dir.mkdir(parents=True, exist_ok=True)
        by_file: dict[Path, list[Record]] = {}
        for record in records:
            by_file.setdefault(day_file(self._dir, record), []).append(record)
        return sum(self._append(path, batch, redelivered) for path, batch in sorted(by_file.items()))

    def _append(self, path: Path, records: list[Record], redelivered: bool) -> int:
        self._mend(path)
        fresh = _first_of_each(records)
        if redelivered:
            unknown = {r.key for r in fresh if r.key not in self._written}
            there = keys_in(path, unknown) if unknown else set()
            fresh = [r for r in fresh if r.key not in self._written and r.key not in there]
        if fresh:
            try:
                _append_synced(path, b"".join(r.line + b"\n" for r in fresh))
            except OSError:
                self._mended.discard(path)  # should cutting the write back have failed too
                raise
        self._written.update(r.key for r in records)  # only once they are in the file, whole
        return len(fresh)

    def _mend(self, path: Path) -> None:
        """Cut a last line left without its newline (a crash mid-write), once per file unless
        an append to it fails."""
        if path in self._mended:
            return
        try:
            with open(path, "rb+") as file:
                size = file.seek(0, os.SEEK_END)
                if size:
                    file.seek(size - 1)
                    if file.read(1) != b"\n":
                        file.truncate(_after_last_newline(file, size))
                        os.fsync(file.fileno())
        except FileNotFoundError:
            pass
        self._mended.add(path)


def keys_in(path: Path, sought: set[str]) -> set[str]:
    """Which of `sought` the file's whole lines hold (stops once all are found)."""
    found: set[str] = set()
    if not sought or not path.exists():
        return found
    with open(path, "rb") as file:
        rest = b""
        while chunk := file.read(_CHUNK):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()  # not a whole line (yet)
            for line in lines:
                key = _key_of(line)
                if key in sought:
                    found.add(key)
                    if len(found) == len(sought):
                        return found
    return found


def _key_of(line: bytes) -> str | None:
    if line.startswith(_KEY_FIRST):  # as router writes records: read the key without parsing
        end = line.find(b'"', len(_KEY_FIRST))
        if end > 0 and b"\\" not in line[len(_KEY_FIRST) : end]:
            return line[len(_KEY_FIRST) : end].decode()
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    key = value.get("settlement_key") if isinstance(value, dict) else None
    return key if isinstance(key, str) else None


def _first_of_each(records: Iterable[Record]) -> list[Record]:
    """One line per settlement key, should a batch hold a key twice."""
    first: dict[str, Record] = {}
    for record in records:
        first.setdefault(record.key, record)
    return list(first.values())


def _append_synced(path: Path, data: bytes) -> None:
    """Append `data` and fsync it (and the directory, when the file was empty: its entry may be
    new). OSError: the file is cut back to its size before, so no part of `data` stays in it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            if not size:
                _fsync_dir(path.parent)
        except OSError:
            with contextlib.suppress(OSError):  # if not, the next append mends the file first
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _after_last_newline(file: BinaryIO, size: int) -> int:
    """The offset just after the file's last newline (0: it has none)."""
    read_at = size
    while read_at > 0:
        start = max(0, read_at - _CHUNK)
        file.seek(start)
        chunk = file.read(read_at - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        read_at = start
    return 0


def read(directory: str, *, client: str | None, since: float, until: float | None) -> list[dict[str, Any]]:
    """The records of a period (since inclusive, until exclusive) from the day files, oldest
    first: `router ledger` where JSONL is the only sink (the streams are trimmed once exported)."""
    first = datetime.datetime.fromtimestamp(max(since, 0), datetime.UTC).date().isoformat()
    last = datetime.datetime.fromtimestamp(until, datetime.UTC).date().isoformat() if until else "9999"
    found = []
    for path in sorted(Path(directory).glob("ledger-*.jsonl")):
        day = path.stem.removeprefix("ledger-")
        if not first <= day <= last:
            continue
        for line in path.read_bytes().splitlines():
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a line cut short by a crash: its record is written again, whole
            when = started_at(record.get("started_at"), 0).timestamp()
            owner = record.get("client") or ANONYMOUS
            if (client is None or owner == client) and since <= when and (until is None or when < until):
                found.append((when, record))
    found.sort(key=lambda pair: pair[0])
    return [record for _, record in found]
