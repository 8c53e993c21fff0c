"""The PostgreSQL sink, and the reads `router ledger` makes (the only psycopg user).

One table (`ledger.table`, default `settlements`), keyed by `settlement_key`: a batch is
inserted in one transaction with ON CONFLICT DO NOTHING, so a redelivered batch, or one an
exporter killed mid-way wrote again, leaves each record once. Router's fields have typed
columns; `record` keeps the whole record (fields router adds later included) as jsonb. A
value that does not fit its column's type is stored as NULL there (it is still in `record`):
one odd record must not hold its client's export up.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_loads

from .entries import Record, SinkError
from .report import ANONYMOUS, SummaryRow, summary_row

CONNECT_TIMEOUT = 10
"""Seconds to reach the database, unless the connection string says otherwise."""
COLUMNS = (
    ("settlement_key", "text PRIMARY KEY"),
    ("request_id", "text"),
    ("idempotency_key", "text"),
    ("client", "text"),
    ("provider", "text"),
    ("key", "text"),
    ("model", "text"),
    ("upstream_model", "text"),
    ("prompt_tokens", "bigint"),
    ("completion_tokens", "bigint"),
    ("cached_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("cost", "numeric"),
    ("usage_source", "text"),
    ("status", "integer"),
    ("outcome", "text"),
    ("started_at", "timestamptz NOT NULL"),
    ("duration_ms", "double precision"),
    ("hedge_of", "text"),
    ("record", "jsonb NOT NULL"),
)
"""The record's fields as columns, where queries filter or sum them; the whole record (with
`endpoint` and whatever a later release adds) is in `record`: `record->>'endpoint'`. A column
added here would be missing from tables made before, which CREATE TABLE IF NOT EXISTS keeps."""
_INTEGERS = {"prompt_tokens": 2**63, "completion_tokens": 2**63, "cached_tokens": 2**63}
_INTEGERS |= {"reasoning_tokens": 2**63, "status": 2**31}


class PostgresSink:
    name = "postgres"

    def __init__(self, dsn: str, table: str = "settlements"):
        self._dsn = dsn
        self._table = table
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def write(self, records: Sequence[Record], *, redelivered: bool) -> int:
        rows = [row(r) for r in records]
        try:
            conn = await self._connection()
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(insert_statement(self._table), rows)
                return max(cursor.rowcount, 0)
        except (psycopg.Error, OSError) as error:
            await self.aclose()  # the next batch starts on a fresh connection
            raise _sink_error(error) from None

    def acknowledged(self, records: Sequence[Record]) -> None:
        pass

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            conn = self._conn = await connect(self._dsn, autocommit=True)
            for made, statement in schema(self._table):
                # Only what is missing: CREATE INDEX IF NOT EXISTS would still wait for a lock
                # on the table (any open transaction that wrote to it).
                found = await (
                    await conn.execute("SELECT to_regclass(%s)", [made.as_string(conn)])
                ).fetchone()
                if found is None or found[0] is None:
                    await conn.execute(statement)
        return self._conn


async def connect(dsn: str, *, autocommit: bool = False) -> psycopg.AsyncConnection[Any]:
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        # Not its text: the message quotes the string, which may hold a password.
        raise SinkError("ledger.postgres is not a valid PostgreSQL connection string") from None
    if "connect_timeout" not in params:
        dsn = make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT)
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=autocommit)
    set_json_loads(orjson.loads, conn)
    return conn


def schema(table: str) -> list[tuple[sql.Identifier, sql.Composed]]:
    """The table and its two indexes: (the name each makes, the statement that makes it)."""
    name = _identifier(table)
    *where, bare = table.split(".")
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(column), sql.SQL(kind)) for column, kind in COLUMNS
    )
    made = [(name, sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(name, columns))]
    for suffix, on in (("client_started_at_idx", "client, started_at"), ("started_at_idx", "started_at")):
        index = sql.Identifier(f"{bare}_{suffix}")
        statement = sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(index, name, sql.SQL(on))
        made.append((sql.Identifier(*where, f"{bare}_{suffix}"), statement))
    return made


def insert_statement(table: str) -> sql.Composed:
    names = sql.SQL(", ").join(sql.Identifier(column) for column, _ in COLUMNS)
    values = sql.SQL(", ").join(
        sql.SQL("%s::jsonb") if column == "record" else sql.SQL("%s") for column, _ in COLUMNS
    )
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (settlement_key) DO NOTHING").format(
        _identifier(table), names, values
    )


def row(record: Record) -> tuple[Any, ...]:
    """A record's column values, in COLUMNS order."""
    fields = record.fields
    values: list[Any] = []
    for column, _ in COLUMNS:
        if column == "settlement_key":
            values.append(_text(record.key))
        elif column == "started_at":
            values.append(record.started_at)
        elif column == "record":
            # PostgreSQL text cannot hold NUL, not even escaped in jsonb.
            values.append(record.line.decode("utf-8", "replace").replace("\\u0000", "\\ufffd"))
        elif column in _INTEGERS:
            values.append(_integer(fields.get(column), _INTEGERS[column]))
        elif column == "cost":
            values.append(_decimal(fields.get(column)))
        elif column == "duration_ms":
            values.append(_float(fields.get(column)))
        else:
            values.append(_text(fields.get(column)))
    return tuple(values)


async def records(
    dsn: str, table: str, *, client: str | None, since: float, until: float | None
) -> AsyncIterator[dict[str, Any]]:
    """The records of a period (since inclusive, until exclusive), oldest first."""
    where, params = _where(client, since, until)
    query = sql.SQL("SELECT record FROM {} WHERE {} ORDER BY started_at, settlement_key").format(
        _identifier(table), where
    )
    try:
        conn = await connect(dsn)
        try:
            async with conn.cursor(name="router_ledger") as cursor:  # server-side: rows as they come
                await cursor.execute(query, params)
                async for (record,) in cursor:
                    yield record
        finally:
            await conn.close()
    except (psycopg.Error, OSError) as error:
        raise _sink_error(error) from None


async def summary(
    dsn: str, table: str, *, client: str | None, since: float, until: float | None
) -> list[SummaryRow]:
    """Tokens and cost per client, model and provider over a period, as `report.summarize`."""
    where, params = _where(client, since, until)
    query = sql.SQL(
        "SELECT coalesce(client, {anonymous}), coalesce(model, ''), coalesce(provider, ''), count(*),"
        " coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0),"
        " coalesce(sum(cached_tokens), 0), coalesce(sum(reasoning_tokens), 0), coalesce(sum(cost), 0)"
        " FROM {table} WHERE {where} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).format(anonymous=sql.Literal(ANONYMOUS), table=_identifier(table), where=where)
    try:
        conn = await connect(dsn)
        try:
            cursor = await conn.execute(query, params)
            found = await cursor.fetchall()
        finally:
            await conn.close()
    except (psycopg.Error, OSError) as error:
        raise _sink_error(error) from None
    return [
        summary_row(client, model, provider, counts, cost) for client, model, provider, *counts, cost in found
    ]


def _where(client: str | None, since: float, until: float | None) -> tuple[sql.Composed, list[Any]]:
    conditions = [sql.SQL("started_at >= %s")]
    params: list[Any] = [_utc(since)]
    if until is not None:
        conditions.append(sql.SQL("started_at < %s"))
        params.append(_utc(until))
    if client == ANONYMOUS:  # written with no client name
        conditions.append(sql.SQL("(client IS NULL OR client = %s)"))
        params.append(client)
    elif client is not None:
        conditions.append(sql.SQL("client = %s"))
        params.append(client)
    return sql.SQL(" AND ").join(conditions), params


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


def _identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text.replace("\x00", "\ufffd")


def _integer(value: Any, bound: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if -bound <= value < bound else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = Decimal(repr(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _sink_error(error: BaseException) -> SinkError:
    text = " ".join(str(error).split())  # libpq's messages run over several lines
    return SinkError(f"{type(error).__name__}: {text}" if text else type(error).__name__)
