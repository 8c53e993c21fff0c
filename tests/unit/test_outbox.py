"""The outbox and its journal on a real directory: what is appended survives a reopen, in order;
the journal is bounded, drained files are emptied, torn lines are skipped, and only journals
whose flock is free are taken over."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from router.state import outbox as outbox_module
from router.state.base import Settle, Stored
from router.state.journal import SUFFIX, decode, encode
from router.state.outbox import Outbox


def settle(n: int, **fields: Any) -> Settle:
    record = b'{"settlement_key":"stl_%d","note":"\xc3\xa9\\n"}' % n
    return Settle(
        f"c:team{n % 2}", f"stl_{n}", tokens=n, periods=("2026-01-01", "total"), record=record, **fields
    )


def journals(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + SUFFIX))


def lines(path: Path) -> list[bytes]:
    return [line for line in path.read_bytes().split(b"\n") if line]


async def test_appended_settlements_are_replayed_in_order_by_the_next_process(tmp_path: Path) -> None:
    first = Outbox.open(tmp_path, limit=100)
    first.append(settle(1))
    first.extend([settle(2), settle(3, stored=Stored("stl_3", 200, False, b"{}"))])
    path = first.path
    assert path is not None and len(lines(path)) == 3  # written at once, before any fsync
    await first.aclose()  # kept: it holds settlements
    assert journals(tmp_path) == [path]

    second = Outbox.open(tmp_path, limit=100)
    assert list(second) == [settle(1), settle(2), settle(3, stored=Stored("stl_3", 200, False, b"{}"))]
    await second.sync()  # its copy is durable: the old file is gone
    assert second.path is not None and journals(tmp_path) == [second.path]
    assert [decode(line) for line in lines(second.path)] == list(second)
    assert second.popleft() == settle(1) and second.head == settle(2)
    await second.aclose()

    third = Outbox.open(tmp_path, limit=100)  # popped but not drained: replayed again, harmlessly
    assert [s.settlement_key for s in third] == ["stl_1", "stl_2", "stl_3"]
    await third.aclose()


async def test_journals_of_several_stopped_processes_are_taken_over_oldest_first(tmp_path: Path) -> None:
    a = Outbox.open(tmp_path, limit=100)  # two processes running side by side (--workers 2)
    b = Outbox.open(tmp_path, limit=100)
    assert not a and not b  # neither took the other's file: both are locked
    a.extend([settle(1), settle(2)])
    b.append(settle(3))
    a_path, b_path = a.path, b.path
    assert a_path is not None and b_path is not None
    await a.aclose()
    await b.aclose()
    os.utime(a_path, (2_000_000_000, 2_000_000_000))
    os.utime(b_path, (1_000_000_000, 1_000_000_000))  # b's last write came first
    heir = Outbox.open(tmp_path, limit=100)
    assert [s.settlement_key for s in heir] == ["stl_3", "stl_1", "stl_2"]
    await heir.sync()
    assert journals(tmp_path) == [heir.path]
    await heir.aclose()


async def test_only_journals_whose_lock_is_free_are_taken_over(tmp_path: Path) -> None:
    alive = Outbox.open(tmp_path, limit=100)  # a process still running: its flock is held
    alive.append(settle(1))
    stopped = Outbox.open(tmp_path, limit=100)
    stopped.append(settle(2))
    await stopped.aclose()
    assert list(stopped) == [settle(2)]

    starting = Outbox.open(tmp_path, limit=100)
    assert list(starting) == [settle(2)]
    await starting.sync()
    assert alive.path is not None and starting.path is not None
    assert journals(tmp_path) == sorted([alive.path, starting.path])
    assert [decode(line) for line in lines(alive.path)] == [settle(1)]  # untouched
    assert list(alive) == [settle(1)]
    await alive.aclose()
    await starting.aclose()


async def test_a_torn_last_line_is_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torn = tmp_path / f"outbox-1-dead{SUFFIX}"
    whole = encode(settle(1)) + encode(settle(2))
    torn.write_bytes(whole + encode(settle(3))[:40])  # the process died inside a write
    with caplog.at_level(logging.WARNING, "router.state"):
        outbox = Outbox.open(tmp_path, limit=100)
    assert list(outbox) == [settle(1), settle(2)]
    assert any("1 unreadable line(s) skipped" in r.getMessage() for r in caplog.records)
    await outbox.sync()
    assert not torn.exists()
    await outbox.aclose()


async def test_past_its_limit_a_settlement_is_dropped_counted_and_logged_once_per_burst(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dropped: list[int] = []
    outbox = Outbox.open(tmp_path, limit=3, on_drop=dropped.append)
    with caplog.at_level(logging.ERROR, "router.state"):
        outbox.extend([settle(1), settle(2)])
        outbox.extend([settle(3), settle(4)])
        outbox.append(settle(5))
        assert [s.settlement_key for s in outbox] == ["stl_1", "stl_2", "stl_3"]
        assert sum(dropped) == 2
        assert outbox.path is not None and len(lines(outbox.path)) == 3  # the journal is bounded too
        outbox.popleft()
        outbox.append(settle(6))  # room again
        outbox.append(settle(7))  # a second burst
    assert sum(dropped) == 3
    full = [r for r in caplog.records if "outbox full" in r.getMessage()]
    assert len(full) == 2  # one per burst, not one per settlement
    assert any("2 settlement(s) were dropped" in r.getMessage() for r in caplog.records)
    await outbox.aclose()


async def test_a_drained_journal_is_emptied_and_deleted_at_close(tmp_path: Path) -> None:
    outbox = Outbox.open(tmp_path, limit=100)
    outbox.extend([settle(1), settle(2)])
    assert outbox.path is not None
    path = outbox.path
    outbox.popleft()
    assert len(lines(path)) == 2  # append-only until it drains
    outbox.popleft()
    assert path.stat().st_size == 0 and not outbox
    outbox.append(settle(3))  # appends start again from the beginning
    assert [decode(line) for line in lines(path)] == [settle(3)]
    outbox.popleft()
    await outbox.aclose()
    assert journals(tmp_path) == []


async def test_a_journal_mostly_written_is_rewritten_with_what_still_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "COMPACT_AT", 3)
    outbox = Outbox.open(tmp_path, limit=100)
    outbox.extend(settle(n) for n in range(1, 6))
    first = outbox.path
    for _ in range(3):
        outbox.popleft()
    await outbox.sync()
    assert outbox.path is not None and outbox.path != first
    assert [decode(line) for line in lines(outbox.path)] == [settle(4), settle(5)]
    assert journals(tmp_path) == [outbox.path]  # the old file went once the new one was durable
    await outbox.aclose()
    reopened = Outbox.open(tmp_path, limit=100)
    assert list(reopened) == [settle(4), settle(5)]
    await reopened.aclose()


async def test_a_rewrite_is_made_off_the_event_loop_while_appends_and_pops_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "COMPACT_AT", 3)
    outbox = Outbox.open(tmp_path, limit=100)
    outbox.extend(settle(n) for n in range(1, 6))
    first = outbox.path
    assert first is not None
    for _ in range(3):
        outbox.popleft()  # the third starts a rewrite of what waits: stl_4, stl_5
    assert outbox.path == first  # popleft() returned before any of it was written
    outbox.append(settle(6))  # meanwhile: in the old file, and added to the new one
    assert outbox.popleft() == settle(4)
    assert [decode(line) for line in lines(first)] == [settle(n) for n in range(1, 7)]

    await outbox.sync()
    assert outbox.path is not None and outbox.path != first
    assert journals(tmp_path) == [outbox.path]
    # stl_4, popped during the copy, is still in it: replayed harmlessly after a crash.
    assert [decode(line) for line in lines(outbox.path)] == [settle(4), settle(5), settle(6)]
    assert list(outbox) == [settle(5), settle(6)]
    outbox.append(settle(7))
    await outbox.aclose()
    reopened = Outbox.open(tmp_path, limit=100)
    assert [s.settlement_key for s in reopened] == ["stl_4", "stl_5", "stl_6", "stl_7"]
    await reopened.aclose()


async def test_a_rewrite_is_dropped_when_the_outbox_drains_before_it_is_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "COMPACT_AT", 3)
    outbox = Outbox.open(tmp_path, limit=100)
    outbox.extend(settle(n) for n in range(1, 6))
    first = outbox.path
    assert first is not None
    while outbox:
        outbox.popleft()
    await outbox.sync()
    assert outbox.path == first and first.stat().st_size == 0
    assert journals(tmp_path) == [first] and list(tmp_path.iterdir()) == [first]  # no copy left
    await outbox.aclose()
    assert list(tmp_path.iterdir()) == []


def test_without_an_event_loop_a_rewrite_is_made_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module, "COMPACT_AT", 3)
    outbox = Outbox.open(tmp_path, limit=100)  # a tool, not the server: there is no loop
    outbox.extend(settle(n) for n in range(1, 6))
    first = outbox.path
    for _ in range(3):
        outbox.popleft()
    assert outbox.path is not None and outbox.path != first
    assert journals(tmp_path) == [outbox.path]  # fsynced at once, so the old file is gone
    assert [decode(line) for line in lines(outbox.path)] == [settle(4), settle(5)]
    asyncio.run(outbox.aclose())


async def test_without_a_journal_the_outbox_is_in_memory_and_bounded() -> None:
    dropped: list[int] = []
    outbox = Outbox(limit=2, on_drop=dropped.append)
    outbox.extend([settle(1), settle(2), settle(3)])
    assert outbox.path is None and len(outbox) == 2 and dropped == [1]
    assert outbox.popleft() == settle(1)
    await outbox.sync()
    await outbox.aclose()
