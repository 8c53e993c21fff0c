"""The `router` command: serve, check, sim, ledger (and its summary and export), keys."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn

from . import config as configuration
from .config import Config, ConfigError
from .types import JSON


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line on stderr and exit code 2, as every other refusal."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _ledger_options(parser: argparse.ArgumentParser, *, formats: tuple[str, ...], default: str) -> None:
    parser.add_argument(
        "--config", default=None, help="providers.yaml, for ledger.postgres or state.url (default: as serve)"
    )
    parser.add_argument(
        "--client", default=None, help="only this client's records (_: no clients configured)"
    )
    parser.add_argument(
        "--since", default=None, help="from this time: 2026-11-22, 2026-11-22T08:00:00Z, or an age like 1h"
    )
    parser.add_argument("--until", default=None, help="before this time (same forms as --since)")
    parser.add_argument(
        "--format", choices=formats, default=default, help=f"{' | '.join(formats)} (default: {default})"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="router", description="An OpenAI-compatible LLM gateway.")
    parser.add_argument("--version", action="version", version=f"router {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument(
        "--config", default=None, help="providers.yaml (default: $ROUTER_CONFIG, ./providers.yaml)"
    )
    serve.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: server.host, 127.0.0.1); 0.0.0.0 or :: needs client keys",
    )
    serve.add_argument(
        "--port",
        type=int,
        default=None,
        help="port to listen on (default: server.port, 8080); 0: any free one",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default 1); more need a redis:// state.url"
    )
    serve.add_argument("--demo", action="store_true", help="replace every provider with a local simulator")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate the config and print the routing table")
    check.add_argument(
        "--config", default=None, help="providers.yaml (default: $ROUTER_CONFIG, ./providers.yaml)"
    )
    check.add_argument(
        "--demo", action="store_true", help="check as --demo would load it (keys may be unset)"
    )
    check.set_defaults(run=_check)

    sim = commands.add_parser("sim", help="run a provider simulator")
    sim.add_argument(
        "--dialect", required=True, choices=configuration.DIALECTS, help="which provider's API to simulate"
    )
    sim.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    sim.add_argument("--port", type=int, default=0, help="port to listen on (default: any free one)")
    sim.add_argument("--faults", default="", help="fault spec, e.g. 'status=429,retry_after=2,times=3'")
    sim.add_argument("--latency", default="0ms", help="delay before each answer, e.g. 200ms")
    sim.add_argument("--chunks", type=int, default=8, help="content chunks per streamed answer")
    sim.add_argument("--chunk-gap", default="0ms", help="delay between streamed chunks")
    sim.add_argument(
        "--paced-whole", action="store_true", help="a whole answer takes as long as its stream would"
    )
    sim.add_argument("--keys", default=None, help="comma-separated keys to accept (default: any)")
    sim.set_defaults(run=_sim)

    ledger = commands.add_parser(
        "ledger", help="settlement records: print them, sum them up (summary), export them (export)"
    )
    _ledger_options(ledger, formats=("jsonl", "csv"), default="jsonl")
    ledger.set_defaults(run=_ledger)
    ledger_commands = ledger.add_subparsers(dest="ledger_command", metavar="[summary | export]")
    summary = ledger_commands.add_parser(
        "summary", help="tokens and cost per client, model and provider for a period"
    )
    _ledger_options(summary, formats=("table", "csv", "jsonl"), default="table")
    summary.set_defaults(run=_ledger_summary)
    export = ledger_commands.add_parser(
        "export", help="copy every client's ledger stream to ledger.postgres / ledger.jsonl, then trim it"
    )
    export.add_argument(
        "--config", default=None, help="providers.yaml, for state.url and ledger (default: as serve)"
    )
    export.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve this process's /metrics on this port (default: none)",
    )
    export.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address for --metrics-port (default: 127.0.0.1; 0.0.0.0 in a container)",
    )
    export.add_argument(
        "--once", action="store_true", help="export what is there, then exit (for cron and tests)"
    )
    export.set_defaults(run=_ledger_export)

    keys = commands.add_parser("keys", help="client keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    new = key_commands.add_parser("new", help="print a new client key and its config line")
    new.add_argument("--name", default="my-team", help="the client's name in the config (default: my-team)")
    new.set_defaults(run=_keys_new)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("router")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _load(path: str | None, *, demo: bool) -> Config | None:
    path = path or configuration.default_path()
    try:
        return configuration.load(path, demo=demo)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"router: {path}: {len(error.problems)} problem(s); nothing was started", file=sys.stderr)
        return None


# -- check ------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config, demo=args.demo)
    if config is None:
        return 1
    rows = [("KIND", "MODEL", "PROVIDER", "KEY", "PRIORITY", "WEIGHT", "UPSTREAM", "ACCEPTS")]
    kind_order = configuration.KINDS.index
    for model, targets in sorted(config.targets.items(), key=lambda item: kind_order(item[1][0].route.kind)):
        for t in targets:
            accepts = t.route.accepts
            rows.append(
                (
                    t.route.kind,
                    model,
                    t.provider.name,
                    t.key.name,
                    str(t.provider.priority),
                    f"{t.provider.weight:g}",
                    t.route.upstream,
                    # in FEATURES order; "all" where nothing is declared, "-" for plain chat only
                    "n/a"
                    if t.route.kind != "chat"
                    else "all"
                    if accepts is None
                    else ",".join(f for f in configuration.FEATURES if f in accepts) or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    kinds = [targets[0].route.kind for targets in config.targets.values()]
    models = ", ".join(f"{kinds.count(k)} {k}" for k in configuration.KINDS if k in kinds)
    print(
        f"ok: {len(config.providers)} providers, {len(config.targets)} models ({models}), "
        f"{sum(len(t) for t in config.targets.values())} targets, {len(config.clients)} clients"
    )
    return 0


# -- serve ------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    config = _load(args.config, demo=args.demo)
    if config is None:
        return 1
    from .serve import serve

    return serve(config, args)


# -- sim --------------------------------------------------------------------------------


def _sim(args: argparse.Namespace) -> int:
    from .sim import SimServer
    from .sim.faults import FaultSpecError, parse_duration

    try:
        sim = SimServer(
            args.dialect,
            host=args.host,
            port=args.port,
            faults=args.faults,
            latency=parse_duration(args.latency),
            chunks=args.chunks,
            chunk_gap=parse_duration(args.chunk_gap),
            paced_whole=args.paced_whole,
            keys=tuple(args.keys.split(",")) if args.keys else None,
        )
    except FaultSpecError as error:
        print(f"router sim: {error}", file=sys.stderr)
        return 2

    async def run() -> None:
        await sim.start()
        print(f"router sim: {args.dialect} on {sim.base_url} (use this as its base_url)", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop

        uvloop.run(run())
    except KeyboardInterrupt:
        pass
    return 0


# -- ledger -----------------------------------------------------------------------------


def _ledger(args: argparse.Namespace) -> int:
    """Records of a period, oldest first: from PostgreSQL when ledger.postgres is set, else from
    the JSONL files when ledger.jsonl is, else from the ledger streams (or state.ledger_file)."""
    from .export import report

    period = _period(args, "router ledger")
    if period is None:
        return 2
    config, since, until = period
    out = sys.stdout.buffer
    row = report.record_csv if args.format == "csv" else report.record_line
    head = report.csv_header() if args.format == "csv" else b""

    async def from_postgres(dsn: str) -> None:
        from .export import postgres

        found = postgres.records(dsn, config.ledger.table, client=args.client, since=since, until=until)
        first = await anext(found, None)  # connected and answered: only now does output start
        out.write(head)
        if first is not None:
            out.write(row(first))
            async for record in found:
                out.write(row(record))

    if config.ledger.postgres:
        failed = _from_database("router ledger", from_postgres(config.ledger.postgres))
    else:
        failed, records = _read_records("router ledger", config, args.client, since, until)
        if not failed:
            out.write(head + b"".join(row(record) for record in records))
    out.flush()
    return failed


def _ledger_summary(args: argparse.Namespace) -> int:
    """Tokens and cost per client, model and provider: summed by the database when there is one."""
    from .export import report

    period = _period(args, "router ledger summary")
    if period is None:
        return 2
    config, since, until = period
    rows: list[report.SummaryRow] = []

    async def from_postgres(dsn: str) -> None:
        from .export import postgres

        rows.extend(
            await postgres.summary(dsn, config.ledger.table, client=args.client, since=since, until=until)
        )

    if config.ledger.postgres:
        failed = _from_database("router ledger summary", from_postgres(config.ledger.postgres))
    else:
        failed, records = _read_records("router ledger summary", config, args.client, since, until)
        rows = report.summarize(records)
    if not failed:
        sys.stdout.buffer.write(report.summary_output(rows, args.format))
        sys.stdout.buffer.flush()
    return failed


def _period(args: argparse.Namespace, name: str) -> tuple[Config, float, float | None] | None:
    """The config and --since / --until (None, said on stderr, when one is not a time)."""
    from .export.report import moment

    config = _load(args.config, demo=True)  # reading records needs no provider keys
    if config is None:
        return None
    since, until = moment(args.since), moment(args.until) if args.until else None
    for flag, text, value in (("--since", args.since, since), ("--until", args.until, until)):
        if text and value is None:
            print(f"{name}: {flag} {text!r}: expected a date, a date-time or an age like 1h", file=sys.stderr)
            return None
    return config, since or 0.0, until


def _from_database(name: str, read: Coroutine[Any, Any, None]) -> int:
    from .export.entries import SinkError

    try:
        asyncio.run(read)
    except SinkError as error:
        print(f"{name}: cannot read the ledger database: {error}", file=sys.stderr)
        return 2
    return 0


def _read_records(
    name: str, config: Config, client: str | None, since: float, until: float | None
) -> tuple[int, list[JSON]]:
    """Records from the JSONL files, or else the ledger streams (or state.ledger_file)."""
    from . import ledger
    from .export import jsonl
    from .export.entries import started_at
    from .state import StateError

    try:
        if config.ledger.jsonl:  # the exporter trims the streams: what it wrote is there
            return 0, jsonl.read(config.ledger.jsonl, client=client, since=since, until=until)
        records = asyncio.run(ledger.read(config, client=client, since=since))
    except (OSError, StateError) as error:
        print(f"{name}: {error}", file=sys.stderr)
        return 2, []
    if until is not None:
        records = [r for r in records if started_at(r.get("started_at"), 0).timestamp() < until]
    return 0, records


def _ledger_export(args: argparse.Namespace) -> int:
    config = _load(args.config, demo=True)  # the exporter calls no provider
    if config is None:
        return 1
    if not config.ledger.configured:
        print("router ledger export: no sink: set ledger.postgres and/or ledger.jsonl", file=sys.stderr)
        return 2
    if config.state.url.startswith("memory://"):
        print(
            "router ledger export: state.url is memory://: there are no ledger streams to export "
            "(the exporter reads Redis)",
            file=sys.stderr,
        )
        return 2
    from . import logs, metrics
    from .export.exporter import ExportFailed, export

    logs.setup()
    if args.metrics_port is not None:
        try:
            metrics.serve(args.metrics_port, args.metrics_host)
        except OSError as error:
            where = f"{args.metrics_host}:{args.metrics_port}"
            print(f"router ledger export: cannot serve metrics on {where}: {error.strerror}", file=sys.stderr)
            return 2
    try:
        asyncio.run(export(config, once=args.once))
    except ExportFailed as error:
        print(f"router ledger export: {error}; the records stay in Redis for the next run", file=sys.stderr)
        return 2
    return 0


# -- keys -------------------------------------------------------------------------------


def _keys_new(args: argparse.Namespace) -> int:
    key = "sk-router-" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"key (give this to the client, it is not stored anywhere): {key}")
    print("config (add under `clients:` in providers.yaml):")
    print(f"  - name: {args.name}")
    print(f'    key_sha256: "{digest}"')
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
