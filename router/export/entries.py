"""Settlement records as the exporter carries them from a ledger stream to its sinks.

A record is kept whole: fields router does not know yet are data, written to every sink as
they came. A stream entry that is not a JSON object, or that lacks its settlement key, is
still exported (wrapped, or keyed by its stream entry): a record no sink accepts would hold
its client's export up forever.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..state.redis.stream import Entry, entry_ms

FIELDS = (
    "settlement_key",
    "request_id",
    "idempotency_key",
    "client",
    "provider",
    "key",
    "model",
    "upstream_model",
    "endpoint",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost",
    "usage_source",
    "status",
    "outcome",
    "started_at",
    "duration_ms",
    "hedge_of",
)
"""The fields router writes, in the order it writes them (CSV columns, JSON key order)."""


class SinkError(Exception):
    """A sink could not write (or read) records; the message is one line, with no secret."""


@dataclass(frozen=True, slots=True)
class Record:
    key: str
    """The settlement key: what makes a redelivered record the same record."""
    fields: dict[str, Any]
    line: bytes
    """The record as one JSON line (no newline): the stream's own bytes whenever they are one."""
    started_at: datetime.datetime
    """UTC; when the record has none, when Redis appended it."""


class Sink(Protocol):
    """Somewhere records are written durably, each settlement key at most once."""

    name: str

    async def write(self, records: Sequence[Record], *, redelivered: bool) -> int:
        """Write `records` durably, skipping any already there; return how many were new.
        `redelivered`: they were read before and never acknowledged (a crash, a failure)."""
        ...

    def acknowledged(self, records: Sequence[Record]) -> None:
        """They are acknowledged in the stream: they will never come again."""
        ...

    async def aclose(self) -> None: ...


def decode(scope: str, entry: Entry) -> Record | None:
    """A stream entry as a record; None for an entry deleted before it was exported."""
    if entry.body is None:
        return None
    line = entry.body
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        fields: dict[str, Any] = parsed
    else:
        fields, line = {"unparsed": entry.body.decode("utf-8", "replace")}, b""
    key = fields.get("settlement_key")
    if not isinstance(key, str) or not key:
        key = f"{scope}/{entry.id}"  # the same on every redelivery, so still written once
        fields = {"settlement_key": key, **fields}
        line = b""
    if not line or b"\n" in line:
        line = orjson.dumps(fields)
    return Record(key, fields, line, started_at(fields.get("started_at"), entry_ms(entry.id)))


def started_at(value: Any, fallback_ms: int) -> datetime.datetime:
    if isinstance(value, str):
        try:
            when = datetime.datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.UTC)
            return when.astimezone(datetime.UTC)
    return datetime.datetime.fromtimestamp(fallback_ms / 1000, datetime.UTC)


def ordered(record: Mapping[str, Any]) -> dict[str, Any]:
    """Router's fields in router's order, then any others (a database may have reordered them)."""
    known = {name: record[name] for name in FIELDS if name in record}
    return known | {name: value for name, value in record.items() if name not in known}
