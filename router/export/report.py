"""What `router ledger` prints: records as JSON lines or CSV, and the summary of a period.

Pure functions over records (mappings) and summary rows, whichever source they came from:
the database, the Redis streams, or `state.ledger_file`.
"""

from __future__ import annotations

import csv
import datetime
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from typing import Any

import orjson

from ..config import parse_duration
from .entries import FIELDS, ordered

ANONYMOUS = "_"
"""The client name of records written with no clients configured (router.limits.ANONYMOUS)."""


@dataclass(frozen=True, slots=True)
class SummaryRow:
    """Tokens and cost of one client, model and provider over a period."""

    client: str
    model: str
    provider: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: float = 0.0


SUMMARY_COLUMNS = tuple(f.name for f in fields(SummaryRow))
_COUNTS = SUMMARY_COLUMNS[3:8]


def moment(text: str | None) -> float | None:
    """--since / --until: an ISO date or date-time (UTC unless it says otherwise), or an age
    ("90m", "1h"); 0 for none; None when it is neither."""
    if not text:
        return 0.0
    age = parse_duration(text)
    if age is not None:
        return datetime.datetime.now(datetime.UTC).timestamp() - age
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def summary_row(client: str, model: str, provider: str, counts: Sequence[Any], cost: Any) -> SummaryRow:
    """`counts`: requests, prompt, completion, cached and reasoning tokens; cost rounded to nanos."""
    requests, prompt, completion, cached, reasoning = (int(n) for n in counts)
    return SummaryRow(
        client, model, provider, requests, prompt, completion, cached, reasoning, round(float(cost), 9)
    )


def summarize(records: Iterable[Mapping[str, Any]]) -> list[SummaryRow]:
    """Records grouped by client, model and provider, in that order."""
    sums: dict[tuple[str, str, str], list[float]] = {}
    for record in records:
        group = (
            str(record.get("client") or ANONYMOUS),
            str(record.get("model") or ""),
            str(record.get("provider") or ""),
        )
        total = sums.setdefault(group, [0, 0, 0, 0, 0, 0.0])
        total[0] += 1
        for i, name in enumerate(("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")):
            total[i + 1] += _number(record.get(name))
        total[5] += _number(record.get("cost"))
    return [
        summary_row(client, model, provider, total[:5], total[5])
        for (client, model, provider), total in sorted(sums.items())
    ]


def record_line(record: Mapping[str, Any]) -> bytes:
    return orjson.dumps(ordered(record)) + b"\n"


def csv_header() -> bytes:
    return _csv_row(FIELDS)


def record_csv(record: Mapping[str, Any]) -> bytes:
    """Router's fields only (JSON lines keep the rest)."""
    return _csv_row(_cell(record.get(name)) for name in FIELDS)


def summary_output(rows: list[SummaryRow], form: str) -> bytes:
    if form == "jsonl":
        return b"".join(
            orjson.dumps(dict(zip(SUMMARY_COLUMNS, astuple(r), strict=True))) + b"\n" for r in rows
        )
    if form == "csv":
        return _csv_row(SUMMARY_COLUMNS) + b"".join(_csv_row(_cell(v) for v in astuple(r)) for r in rows)
    return summary_table(rows).encode()


def summary_table(rows: list[SummaryRow]) -> str:
    """Aligned columns and a total line, for people."""
    counts = [sum(getattr(r, name) for r in rows) for name in _COUNTS]
    total = summary_row("TOTAL", "", "", counts, sum(r.cost for r in rows))
    table = [tuple(c.upper() for c in SUMMARY_COLUMNS)]
    table += [_shown(r) for r in [*rows, total]]
    widths = [max(len(row[i]) for row in table) for i in range(len(SUMMARY_COLUMNS))]
    lines = []
    for row in table:
        cells = [
            c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _as_dict(row: SummaryRow) -> dict[str, Any]:
    return dict(zip(SUMMARY_COLUMNS, astuple(row), strict=True))


def _shown(row: SummaryRow) -> tuple[str, ...]:
    return (*(str(v) for v in astuple(row)[:-1]), f"{row.cost:.6f}")


def _number(value: Any) -> float:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _csv_row(cells: Iterable[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(list(cells))
    return out.getvalue().encode()
