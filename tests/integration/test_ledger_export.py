"""`router ledger export` against a real redis-server and a real PostgreSQL; `router ledger` reading it.

Records go into the ledger streams as the serving side writes them (RedisStore.settle_all). The
exporter runs in this process where nothing must die, and as a real `router ledger export`
subprocess where it is SIGKILLed mid-batch: each record must then be in PostgreSQL once and in
the JSONL files once, and the streams trimmed of everything exported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from router import config as configuration
from router import limits
from router.cli import main
from router.export import jsonl
from router.export.exporter import Exporter, configured_scopes, export, sinks_of
from router.export.postgres import schema
from router.state import Settle
from router.state.redis import RedisStore
from router.state.redis.stream import GROUP, open_streams
from tests.e2e.conftest import ROOT, ROUTER, free_port
from tests.pg_rig import PostgresServer
from tests.redis_rig import RedisCluster, RedisServer

DAY_1, DAY_2 = "2026-03-01", "2026-03-02"
_tables = iter(range(1_000_000))


@pytest.fixture
def table() -> str:
    """A table of its own for each test (one database for the session: a new one costs 0.5 s)."""
    return f"settlements_{next(_tables)}"


def record(n: int, client: str, day: str = DAY_1, **extra: Any) -> dict[str, Any]:
    """A settlement record as router writes one, plus a field router does not know (yet)."""
    return {
        "settlement_key": f"stl_{client}_{n:04d}",
        "request_id": f"req_{n}",
        "idempotency_key": None,
        "client": client,
        "provider": "trinity" if n % 3 else "chenyu",
        "key": "primary",
        "model": "gpt-4o",
        "upstream_model": "gpt-4o-2024-08-06",
        "prompt_tokens": 100 + n,
        "completion_tokens": 20 + n,
        "cached_tokens": n % 4,
        "reasoning_tokens": 0,
        "cost": round(0.00125 * (n + 1), 9),
        "usage_source": "provider",
        "status": 200,
        "outcome": "completed",
        "started_at": f"{day}T{(n // 60) % 24:02d}:{n % 60:02d}:00.{n % 1000:03d}Z",
        "duration_ms": 12.5 + n,
        "future_field": {"n": n},
        **extra,
    }


def records(alpha: int, beta: int, *, start: int = 0) -> list[dict[str, Any]]:
    """`alpha` and `beta` records, every third on the second day."""
    made = [record(start + n, "alpha", DAY_2 if n % 3 == 2 else DAY_1) for n in range(alpha)]
    return made + [record(start + n, "beta", DAY_2 if n % 3 == 2 else DAY_1) for n in range(beta)]


async def settle(redis: RedisServer | RedisStore, written: list[dict[str, Any]]) -> None:
    """Append records to the ledger streams as the serving side does."""
    store = RedisStore(redis.url, timeout=2.0) if isinstance(redis, RedisServer) else redis
    try:
        settles = [
            Settle(limits.client_scope(r["client"]), r["settlement_key"], record=orjson.dumps(r))
            for r in written
        ]
        assert await store.settle_all(settles) == [True] * len(written)
    finally:
        await store.aclose()


def config_file(
    tmp_path: Path,
    redis: RedisServer,
    *,
    dsn: str | None,
    table: str = "settlements",
    batch: int = 500,
    jsonl: bool = True,
    name: str = "providers.yaml",
) -> Path:
    ledger = [f"table: {table}", f"batch: {batch}"]
    if jsonl:
        ledger.append(f"jsonl: {tmp_path / 'jsonl'}")
    if dsn is not None:
        ledger.append(f"postgres: '{dsn}'")
    path = tmp_path / name
    path.write_text(
        "clients:\n"
        "  - {name: alpha, key: sk-alpha-0123456789}\n"
        "  - {name: beta, key: sk-beta-0123456789}\n"
        f"state: {{url: '{redis.url}'}}\n"
        f"ledger: {{{', '.join(ledger)}}}\n"
        "providers: {trinity: {base_url: 'http://127.0.0.1:1', keys: [k], models: {gpt-4o: {}}}}\n"
    )
    return path


def in_postgres(dsn: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(dsn) as conn:
        return [row[0] for row in conn.execute(f"SELECT record FROM {table} ORDER BY settlement_key")]


def in_jsonl(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Each day file's records, in file order."""
    return {
        path.name: [orjson.loads(line) for line in path.read_bytes().splitlines()]
        for path in sorted((tmp_path / "jsonl").glob("ledger-*.jsonl"))
    }


def stream_state(redis: RedisServer) -> dict[str, tuple[int, int]]:
    """Each client stream's (entries left, entries pending in the exporter's group)."""
    with redis.client() as client:
        found = {}
        for name in ("alpha", "beta"):
            key = "{" + limits.client_scope(name) + "}:ledger"
            grouped = client.exists(key) and any(g["name"] == GROUP for g in client.xinfo_groups(key))
            found[name] = (client.xlen(key), client.xpending(key, GROUP)["pending"] if grouped else 0)
        return found


def by_key(found: list[dict[str, Any]]) -> list[str]:
    return sorted(r["settlement_key"] for r in found)


def start_exporter(config: Path, tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    with (tmp_path / "exporter.log").open("ab") as log:  # the child keeps its own copy open
        return subprocess.Popen(
            [*ROUTER, "ledger", "export", "--config", str(config), *args], cwd=ROOT, stdout=log, stderr=log
        )


@pytest.fixture
def exporters() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Exporter processes a test started: SIGKILLed by PID at the end, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


def run_once(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ROUTER, "ledger", "export", "--config", str(config), "--once"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def wait_for(condition: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_each_record_reaches_postgres_and_jsonl_once_and_the_streams_are_trimmed(
    fresh_redis: RedisServer, postgres_server: PostgresServer, table: str, tmp_path: Path
) -> None:
    first = records(20, 10)
    await settle(fresh_redis, first)
    config = configuration.load(
        config_file(tmp_path, fresh_redis, dsn=postgres_server.dsn(), table=table, batch=7)
    )
    await export(config, once=True)

    assert in_postgres(postgres_server.dsn(), table) == sorted(first, key=lambda r: r["settlement_key"])
    files = in_jsonl(tmp_path)
    assert list(files) == [f"ledger-{DAY_1}.jsonl", f"ledger-{DAY_2}.jsonl"]
    for name, lines in files.items():  # each record in its own day's file
        day = [r for r in first if name == f"ledger-{r['started_at'][:10]}.jsonl"]
        assert sorted(lines, key=lambda r: r["settlement_key"]) == sorted(
            day, key=lambda r: r["settlement_key"]
        )
    assert stream_state(fresh_redis) == {"alpha": (0, 0), "beta": (0, 0)}

    more = records(4, 3, start=100)
    await settle(fresh_redis, more)
    await export(config, once=True)
    assert by_key(in_postgres(postgres_server.dsn(), table)) == by_key(first + more)
    assert by_key([r for lines in in_jsonl(tmp_path).values() for r in lines]) == by_key(first + more)
    assert stream_state(fresh_redis) == {"alpha": (0, 0), "beta": (0, 0)}

    with psycopg.connect(postgres_server.dsn()) as conn:  # typed columns beside the whole record
        row = conn.execute(
            "SELECT client, prompt_tokens, cached_tokens, cost::text, status, started_at,"
            f" record->'future_field', duration_ms FROM {table} WHERE settlement_key = 'stl_alpha_0005'"
        ).fetchone()
    assert row is not None
    assert row[:5] == ("alpha", 105, 1, "0.0075", 200)
    assert row[5].isoformat() == "2026-03-02T00:05:00.005000+00:00" and row[6:] == ({"n": 5}, 17.5)


async def test_an_exporter_killed_while_its_insert_waits_leaves_each_record_once(
    fresh_redis: RedisServer,
    postgres_server: PostgresServer,
    table: str,
    tmp_path: Path,
    exporters: list[subprocess.Popen[bytes]],
) -> None:
    written = records(12, 0)
    await settle(fresh_redis, written)
    dsn = postgres_server.dsn()
    config = config_file(tmp_path, fresh_redis, dsn=dsn, table=table, batch=5)
    with psycopg.connect(dsn, autocommit=True) as setup:
        for _, statement in schema(table):
            setup.execute(statement)
    # Another transaction inserting the batch's third key, not yet committed: the exporter's
    # INSERT ... ON CONFLICT must wait to see whether it commits.
    holder = psycopg.connect(dsn)
    try:
        holder.execute(
            f"INSERT INTO {table} (settlement_key, started_at, record) VALUES (%s, now(), '{{}}')",
            [written[2]["settlement_key"]],
        )
        exporters.append(start_exporter(config, tmp_path))
        with psycopg.connect(dsn, autocommit=True) as watch:
            wait_for(
                lambda: (
                    watch.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE 'INSERT INTO%%'"
                    ).fetchone()
                    == (1,)
                ),
                "the exporter's INSERT to wait on the lock",
            )
        os.kill(exporters[0].pid, signal.SIGKILL)
        exporters[0].wait(10)
    finally:
        holder.rollback()
        holder.close()

    assert stream_state(fresh_redis)["alpha"] == (12, 5)  # the batch was read, never acknowledged
    assert in_postgres(dsn, table) == [] and in_jsonl(tmp_path) == {}
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    assert by_key(in_postgres(dsn, table)) == by_key(written)
    assert by_key([r for lines in in_jsonl(tmp_path).values() for r in lines]) == by_key(written)
    assert stream_state(fresh_redis)["alpha"] == (0, 0)


def metric(text: str, name: str, labels: str = "") -> float | None:
    match = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_a_sink_that_fails_after_postgres_committed_then_a_kill_still_leaves_each_record_once(
    fresh_redis: RedisServer,
    postgres_server: PostgresServer,
    table: str,
    tmp_path: Path,
    exporters: list[subprocess.Popen[bytes]],
) -> None:
    written = records(6, 4)  # alpha's batch (the first) holds day-1 and day-2 records
    await settle(fresh_redis, written)
    dsn = postgres_server.dsn()
    config = config_file(tmp_path, fresh_redis, dsn=dsn, table=table)
    blocked = tmp_path / "jsonl" / f"ledger-{DAY_2}.jsonl"
    blocked.mkdir(parents=True)  # the day-2 file cannot be written: alpha's batch fails after day 1
    port = free_port()
    exporters.append(start_exporter(config, tmp_path, "--metrics-port", str(port)))

    def failed_twice() -> str | None:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
        except httpx.TransportError:
            return None
        return (
            text
            if (metric(text, "router_ledger_export_failures_total", '{sink="jsonl"}') or 0) >= 2
            else None
        )

    text = wait_for(failed_twice, "two failed batches")  # alpha's, then beta's: it is not held up
    assert (
        metric(text, "router_ledger_records_exported_total", '{sink="postgres"}') == 10
    )  # once, not per try
    assert (metric(text, "router_ledger_export_lag_seconds") or 0) > 0
    assert (metric(text, "router_state_redis_memory_used_bytes") or 0) > 100_000
    assert metric(text, "router_state_redis_memory_max_bytes") == 0  # the rig's Redis has no limit
    day_1 = tmp_path / "jsonl" / f"ledger-{DAY_1}.jsonl"
    written_day_1 = [r for r in written if r["started_at"] < DAY_2]
    assert by_key([orjson.loads(line) for line in day_1.read_bytes().splitlines()]) == by_key(written_day_1)
    os.kill(exporters[0].pid, signal.SIGKILL)
    exporters[0].wait(10)

    # both batches read (each client is tried, whatever the other's fate) and never acknowledged
    assert stream_state(fresh_redis) == {"alpha": (6, 6), "beta": (4, 4)}
    day_1.write_bytes(day_1.read_bytes()[:-25])  # as if the crash had cut the last line short
    blocked.rmdir()
    done = run_once(config)
    assert done.returncode == 0, done.stderr
    assert by_key(in_postgres(dsn, table)) == by_key(written)
    files = in_jsonl(tmp_path)
    assert by_key([r for lines in files.values() for r in lines]) == by_key(written)  # each once, all whole
    assert stream_state(fresh_redis) == {"alpha": (0, 0), "beta": (0, 0)}


async def eventually(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """wait_for, for a test whose exporter runs on its own event loop."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_a_client_whose_batch_a_sink_refuses_holds_no_other_client_up(
    fresh_redis: RedisServer,
    postgres_server: PostgresServer,
    table: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = postgres_server.dsn()
    with psycopg.connect(dsn, autocommit=True) as setup:
        for _, statement in schema(table):
            setup.execute(statement)
        setup.execute(  # PostgreSQL itself refuses every batch of alpha's, and only those
            f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF NEW.client = 'alpha' THEN RAISE EXCEPTION 'alpha refused'; END IF; RETURN NEW; END $$;"
            f" CREATE TRIGGER refuse BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_{table}()"
        )
    first = records(3, 3)
    await settle(fresh_redis, first)
    config = configuration.load(config_file(tmp_path, fresh_redis, dsn=dsn, table=table, jsonl=False))
    streams = open_streams(config.state.url)
    sinks = sinks_of(config.ledger)
    exporter = Exporter(streams, sinks, configured_scopes(config), batch=config.ledger.batch, idle=0.05)
    running = asyncio.create_task(exporter.run())
    alpha, beta = (limits.client_scope(name) for name in ("alpha", "beta"))
    try:
        with caplog.at_level(logging.INFO, "router.export"):
            await eventually(
                lambda: stream_state(fresh_redis) == {"alpha": (3, 3), "beta": (0, 0)},
                "beta exported while alpha's batch fails",
            )
            assert by_key(in_postgres(dsn, table)) == by_key(first[3:])
            more = records(0, 2, start=50)  # beta goes on exporting while alpha backs off
            await settle(fresh_redis, more)
            await eventually(lambda: stream_state(fresh_redis)["beta"] == (0, 0), "beta's next records")
            assert by_key(in_postgres(dsn, table)) == by_key(first[3:] + more)
            assert stream_state(fresh_redis)["alpha"] == (3, 3)

            with psycopg.connect(dsn, autocommit=True) as fix:
                fix.execute(f"DROP TRIGGER refuse ON {table}")
            await eventually(lambda: stream_state(fresh_redis)["alpha"] == (0, 0), "alpha, once it can be")
            assert by_key(in_postgres(dsn, table)) == by_key(first + more)
    finally:
        exporter.stop()
        await running
        for sink in sinks:
            await sink.aclose()
        await streams.aclose()
    failed = [fields(r) for r in caplog.records if r.getMessage().startswith("ledger export: failed")]
    assert failed and {f["scope"] for f in failed} == {alpha}
    assert all("alpha refused" in f["error"] for f in failed)
    assert [f["retry_in"] for f in failed] == [0.5 * 2**n for n in range(len(failed))]  # its own backoff
    recovered = [fields(r) for r in caplog.records if r.getMessage() == "ledger export: recovered"]
    assert recovered == [{"scope": alpha, "failures": len(failed)}]
    assert beta not in {f["scope"] for f in failed + recovered}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """What logs.event() said besides its message."""
    found: dict[str, Any] = record.__dict__["fields"]
    return found


TORN_APPEND = """
import asyncio, datetime, os, resource, signal, sys
from router.export.jsonl import JsonlSink
from router.export.entries import Record, SinkError

def record(n):
    line = b'{"settlement_key":"stl_%04d","pad":"%s"}' % (n, b"x" * 100)
    return Record(f"stl_{n:04d}", {}, line, datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC))

async def main(directory):
    sink = JsonlSink(directory)
    await sink.write([record(1), record(2)], redelivered=False)
    size = os.path.getsize(os.path.join(directory, "ledger-2026-03-01.jsonl"))
    # A file size limit: stl_3 fits, stl_4 only in part, then write(2) fails (EFBIG, as a full
    # disk fails with ENOSPC), a real write cut short.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + len(record(3).line) + 1 + 40, hard))
    try:
        await sink.write([record(3), record(4)], redelivered=False)
    except SinkError as error:
        print("failed:", error, file=sys.stderr)
    else:
        sys.exit("the write should have failed")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    await sink.write([record(3), record(4)], redelivered=True)  # the batch comes again
    await sink.write([record(5)], redelivered=False)

asyncio.run(main(sys.argv[1]))
"""


def test_a_jsonl_append_cut_short_by_a_full_disk_is_written_again_whole(tmp_path: Path) -> None:
    # In a process of its own: a file size limit would fail this process's other writes too.
    done = subprocess.run(
        [sys.executable, "-c", TORN_APPEND, str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "failed: OSError: [Errno 27] File too large" in done.stderr
    lines = (tmp_path / f"ledger-{DAY_1}.jsonl").read_bytes().splitlines()
    assert [orjson.loads(line)["settlement_key"] for line in lines] == [f"stl_{n:04d}" for n in range(1, 6)]
    found = jsonl.read(str(tmp_path), client=None, since=0, until=None)
    assert [r["settlement_key"] for r in found] == [f"stl_{n:04d}" for n in range(1, 6)]


def test_router_ledger_reads_postgres_by_client_and_period_and_sums_it_up(
    fresh_redis: RedisServer,
    postgres_server: PostgresServer,
    table: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    written = records(9, 6)
    asyncio.run(settle(fresh_redis, written))
    streams_only = str(config_file(tmp_path, fresh_redis, dsn=None, jsonl=False, name="streams.yaml"))
    assert main(["ledger", "summary", "--config", streams_only, "--format", "jsonl"]) == 0
    from_streams = capsys.readouterr().out
    path = config_file(tmp_path, fresh_redis, dsn=postgres_server.dsn(), table=table)
    asyncio.run(export(configuration.load(path), once=True))
    config = str(path)

    period = ["--since", f"{DAY_1}T00:03:00Z", "--until", DAY_2]
    assert main(["ledger", "--config", config, "--client", "alpha", *period, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("settlement_key,request_id,idempotency_key,client,")
    assert [line.split(",")[0] for line in lines[1:]] == [
        "stl_alpha_0003", "stl_alpha_0004", "stl_alpha_0006", "stl_alpha_0007"
    ]  # fmt: skip
    files_only = str(
        config_file(tmp_path, fresh_redis, dsn=None, name="jsonl.yaml")
    )  # the streams are trimmed
    assert main(["ledger", "--config", files_only, "--client", "alpha", *period, "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines() == lines

    assert main(["ledger", "--config", config, "--client", "beta"]) == 0
    assert [orjson.loads(line) for line in capsys.readouterr().out.splitlines()] == sorted(
        (r for r in written if r["client"] == "beta"), key=lambda r: r["started_at"]
    )  # whole records, fields router does not know included, in router's field order

    assert main(["ledger", "summary", "--config", config, "--format", "jsonl"]) == 0
    from_postgres = capsys.readouterr().out
    assert from_postgres == from_streams  # the database sums what the streams held
    rows = [orjson.loads(line) for line in from_postgres.splitlines()]
    assert [(r["client"], r["provider"]) for r in rows] == [
        ("alpha", "chenyu"), ("alpha", "trinity"), ("beta", "chenyu"), ("beta", "trinity")
    ]  # fmt: skip
    alpha_trinity = [r for r in written if r["client"] == "alpha" and r["provider"] == "trinity"]
    assert rows[1]["requests"] == len(alpha_trinity)
    assert rows[1]["cached_tokens"] == sum(r["cached_tokens"] for r in alpha_trinity)
    assert rows[1]["cost"] == pytest.approx(sum(r["cost"] for r in alpha_trinity))

    assert main(["ledger", "summary", "--config", config, "--client", "beta", "--until", DAY_2]) == 0
    table_lines = capsys.readouterr().out.splitlines()
    assert table_lines[0].split()[:4] == ["CLIENT", "MODEL", "PROVIDER", "REQUESTS"]
    assert table_lines[-1].split()[:2] == ["TOTAL", "4"]  # beta's day-1 records

    dead = f"postgresql://nobody@127.0.0.1:{free_port()}/x"
    unreachable = config_file(tmp_path, fresh_redis, dsn=dead, name="unreachable.yaml")
    for argv in (["ledger"], ["ledger", "summary"]):
        assert main([*argv, "--config", str(unreachable)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1 and "cannot read the ledger database" in err
    with pytest.raises(SystemExit) as exit_:
        main(["ledger", "--config", config, "--format", "xml"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["ledger", "summary", "--config", config, "--until", "later"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


async def test_the_exporter_reads_a_redis_cluster_too(redis_cluster: RedisCluster, tmp_path: Path) -> None:
    redis_cluster.flush()
    written = records(5, 4)
    await settle(RedisStore(redis_cluster.url.replace("+cluster", ""), cluster=True, timeout=2.0), written)
    path = tmp_path / "providers.yaml"
    path.write_text(
        "clients: [{name: alpha, key: sk-alpha-0123456789}, {name: beta, key: sk-beta-0123456789}]\n"
        f"state: {{url: '{redis_cluster.url}'}}\n"
        f"ledger: {{jsonl: '{tmp_path / 'jsonl'}', batch: 3}}\n"
        "providers: {trinity: {base_url: 'http://127.0.0.1:1', keys: [k], models: {gpt-4o: {}}}}\n"
    )
    await export(configuration.load(path), once=True)
    assert by_key([r for lines in in_jsonl(tmp_path).values() for r in lines]) == by_key(written)
    streams = open_streams(redis_cluster.url)
    try:
        for name in ("alpha", "beta"):
            assert await streams.oldest(limits.client_scope(name)) is None
        used, _ = await streams.memory()
    finally:
        await streams.aclose()
    assert used > 3 * 100_000  # three masters' worth
    trimmed: dict[str, int] = {}
    for node in redis_cluster.nodes:
        with node.client() as client:
            trimmed |= {key: client.xlen(key) for key in client.keys("{c:*}:ledger")}
    assert trimmed == {"{c:alpha}:ledger": 0, "{c:beta}:ledger": 0}
