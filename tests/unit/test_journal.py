"""The journal file on a real directory: a settlement survives its line byte for byte, and a
rewrite's copy left by a process that died is deleted, never replayed, while a live one's is
left alone."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from router.state import journal
from router.state.base import Settle, Stored
from router.state.journal import PARTIAL, SUFFIX, decode, encode
from router.state.outbox import Outbox


def settle(n: int) -> Settle:
    return Settle(f"c:team{n % 2}", f"stl_{n}", tokens=n, record=b'{"settlement_key":"stl_%d"}' % n)


def _sample(kind: Any, name: str) -> Any:
    """A value of `kind` that is not a field's default (every field of a new kind is covered)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        (kind,) = (k for k in typing.get_args(kind) if k is not type(None))
    if kind is bytes:
        return b"\x00\xff{" + name.encode() + b"}\n"
    if kind is bool:
        return True
    if kind is int:
        return -7 if "delta" in name else 7
    if kind is str:
        return f"{name}|\u00e9"
    if typing.get_origin(kind) is tuple:
        return ("2026-01-01", "total")
    if kind is Stored:
        return Stored("stl_x", 400, True, b"data: {}\n\n\x00")
    raise AssertionError(f"no sample for Settle.{name} ({kind}): add one here")


def test_every_field_of_a_settlement_survives_a_line_byte_for_byte() -> None:
    hints = typing.get_type_hints(Settle)
    full = Settle(**{f.name: _sample(hints[f.name], f.name) for f in dataclasses.fields(Settle)})
    assert all(getattr(full, f.name) != f.default for f in dataclasses.fields(Settle))
    line = encode(full)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == full
    assert decode(encode(Settle("c:a", "stl_1"))) == Settle("c:a", "stl_1")


def test_a_line_written_before_a_field_existed_reads_with_its_default() -> None:
    # A journal written by the previous release (no `endpoint`) replays after an upgrade.
    line = encode(Settle("c:a", "stl_1", tokens=5, endpoint="embeddings")).replace(
        b',"endpoint":"embeddings"', b""
    )
    assert b"endpoint" not in line
    assert decode(line) == Settle("c:a", "stl_1", tokens=5)
    assert decode(encode(Settle("c:a", "stl_1", endpoint="messages"))).endpoint == "messages"


async def test_a_copy_left_by_a_process_that_died_mid_rewrite_is_deleted_not_replayed(
    tmp_path: Path,
) -> None:
    dead = tmp_path / f"outbox-1-dead{SUFFIX}"
    dead.write_bytes(encode(settle(1)) + encode(settle(2)))
    unfinished = tmp_path / f"outbox-1-copy{SUFFIX}{PARTIAL}"
    unfinished.write_bytes(encode(settle(2)))  # its rewrite had copied stl_2 when it died
    live_copy, live_fd = journal.copy(tmp_path, [settle(3)])  # a live process's rewrite, under way
    try:
        outbox = Outbox.open(tmp_path, limit=100)
        assert [s.settlement_key for s in outbox] == ["stl_1", "stl_2"]  # each once
        assert not unfinished.exists() and live_copy.exists()
        await outbox.aclose()
        assert [decode(line) for line in live_copy.read_bytes().splitlines()] == [settle(3)]
    finally:
        journal.discard(live_copy, live_fd)
    assert not live_copy.exists()
