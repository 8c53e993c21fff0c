"""The `router` command: serve, check, sim, ledger, keys."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import secrets
import sys
from collections.abc import Sequence

import orjson

from . import config as configuration
from .config import Config, ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description="An OpenAI-compatible LLM gateway.")
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

    ledger = commands.add_parser("ledger", help="print settlement records as JSON lines")
    ledger.add_argument(
        "--config", default=None, help="providers.yaml, for its state.url (default: as serve)"
    )
    ledger.add_argument("--client", default=None, help="only this client's records")
    ledger.add_argument(
        "--since", default=None, help="from this time: 2026-11-22, 2026-11-22T08:00:00Z, or an age like 1h"
    )
    ledger.set_defaults(run=_ledger)

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
    rows = [("MODEL", "PROVIDER", "KEY", "PRIORITY", "WEIGHT", "UPSTREAM", "ACCEPTS")]
    for model, targets in config.targets.items():
        for t in targets:
            accepts = t.route.accepts
            rows.append(
                (
                    model,
                    t.provider.name,
                    t.key.name,
                    str(t.provider.priority),
                    f"{t.provider.weight:g}",
                    t.route.upstream,
                    # in FEATURES order; "all" where nothing is declared, "-" for plain chat only
                    "all"
                    if accepts is None
                    else ",".join(f for f in configuration.FEATURES if f in accepts) or "-",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(
        f"ok: {len(config.providers)} providers, {len(config.targets)} models, "
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
    from . import ledger
    from .state import StateError

    config = _load(args.config, demo=True)  # reading records needs no provider keys
    if config is None:
        return 1
    since = _since(args.since)
    if since is None:
        print(
            f"router ledger: --since {args.since!r}: expected a date, a date-time or an age like 1h",
            file=sys.stderr,
        )
        return 2
    try:
        records = asyncio.run(ledger.read(config, client=args.client, since=since))
    except (OSError, StateError) as error:
        print(f"router ledger: {error}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    for record in records:
        out.write(orjson.dumps(record) + b"\n")
    out.flush()
    return 0


def _since(text: str | None) -> float | None:
    """--since: an ISO date or date-time (UTC unless it says otherwise), or an age ("90m", "1h")."""
    import datetime

    if not text:
        return 0.0
    age = configuration.parse_duration(text)
    if age is not None:
        return datetime.datetime.now(datetime.UTC).timestamp() - age
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


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
