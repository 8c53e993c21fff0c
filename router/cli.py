"""The `router` command: serve, check, sim, ledger, keys."""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import ipaddress
import os
import secrets
import shlex
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence

import orjson

from . import config as configuration
from .config import Config, ConfigError

DEMO_KEY = "demo-provider-key"
_SERVE_ENV = "ROUTER_SERVE_SPEC"  # how `serve --workers N` hands its choices to worker processes
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read when prometheus_client is imported: set it first
GC_YOUNG = 10_000
"""Net new objects between the garbage collector's young passes (Python's default: 700)."""


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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the gateway")
    serve.add_argument(
        "--config", default=None, help="providers.yaml (default: $ROUTER_CONFIG, ./providers.yaml)"
    )
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--demo", action="store_true", help="replace every provider with a local simulator")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate the config and print the routing table")
    check.add_argument("--config", default=None)
    check.add_argument(
        "--demo", action="store_true", help="check as --demo would load it (keys may be unset)"
    )
    check.set_defaults(run=_check)

    sim = commands.add_parser("sim", help="run a provider simulator")
    sim.add_argument("--dialect", required=True, choices=configuration.DIALECTS)
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=0)
    sim.add_argument("--faults", default="", help="fault spec, e.g. 'status=429,retry_after=2,times=3'")
    sim.add_argument("--latency", default="0ms", help="delay before each answer, e.g. 200ms")
    sim.add_argument("--chunks", type=int, default=8, help="content chunks per streamed answer")
    sim.add_argument("--chunk-gap", default="0ms", help="delay between streamed chunks")
    sim.add_argument("--keys", default=None, help="comma-separated keys to accept (default: any)")
    sim.set_defaults(run=_sim)

    ledger = commands.add_parser("ledger", help="print settlement records as JSON lines")
    ledger.add_argument("--config", default=None)
    ledger.add_argument("--client", default=None, help="only this client's records")
    ledger.add_argument(
        "--since", default=None, help="from this time: 2026-11-22, 2026-11-22T08:00:00Z, or an age like 1h"
    )
    ledger.set_defaults(run=_ledger)

    keys = commands.add_parser("keys", help="client keys")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    new = key_commands.add_parser("new", help="print a new client key and its config line")
    new.add_argument("--name", default="my-team")
    new.set_defaults(run=_keys_new)
    return parser


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
    rows = [("MODEL", "PROVIDER", "KEY", "PRIORITY", "WEIGHT", "UPSTREAM")]
    for model, targets in config.targets.items():
        for t in targets:
            rows.append(
                (
                    model,
                    t.provider.name,
                    t.key.name,
                    str(t.provider.priority),
                    f"{t.provider.weight:g}",
                    t.route.upstream,
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
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    if not config.clients and not _is_loopback(host):
        print(
            f"router: refusing to serve on {host} with no client keys: anyone who can reach it could spend "
            "your providers' quota. Add a `clients` section (see `router keys new`) or bind to 127.0.0.1.",
            file=sys.stderr,
        )
        return 1
    if args.workers > 1 and config.state.url.startswith("memory://"):
        print(
            f"router: --workers {args.workers} needs shared state: set state.url to a redis:// URL "
            "(with memory:// each worker would keep its own limits and ledger).",
            file=sys.stderr,
        )
        return 1
    sims = []
    if args.demo:
        from .sim import SimServer

        sims = [SimServer(p.dialect or name).start_in_thread() for name, p in config.providers.items()]
        config = config.with_upstreams(
            {name: s.base_url for name, s in zip(config.providers, sims, strict=True)}, DEMO_KEY
        )
    _banner(config, host, port, demo=args.demo)
    try:
        return _run_uvicorn(config, host, port, args)
    finally:
        for sim in sims:
            sim.stop()


def _run_uvicorn(config: Config, host: str, port: int, args: argparse.Namespace) -> int:
    import uvicorn

    # Before anything imports prometheus_client: it picks its storage from this variable.
    made = _metrics_directory(workers=args.workers)
    from . import logs
    from .reload import ConfigSource

    logs.setup()
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "httptools",
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,  # logs.setup(): JSON lines
        "log_level": "warning",
        "server_header": False,
        # router reads no client address (X-Forwarded-For is neither trusted nor logged), so
        # uvicorn's proxy-headers layer would only cost a wrapper per request.
        "proxy_headers": False,
        "timeout_graceful_shutdown": config.server.grace,
    }
    path = args.config or configuration.default_path()
    upstreams = {name: p.base_url for name, p in config.providers.items()} if args.demo else None
    if args.workers > 1:
        os.environ[_SERVE_ENV] = orjson.dumps(
            {"config": path, "demo": args.demo, "upstreams": upstreams}
        ).decode()
        try:
            uvicorn.run("router.cli:worker_app", factory=True, workers=args.workers, **options)  # type: ignore[arg-type]
        finally:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
        return 0
    from .app import create_app

    source = ConfigSource(path, demo=args.demo, upstreams=upstreams, demo_key=DEMO_KEY)
    app = create_app(config, source=source)
    _quiet_gc()

    class DrainingServer(uvicorn.Server):
        """SIGTERM: /readyz turns 503 at once; after server.shutdown_delay new connections stop,
        and requests in flight get server.grace to finish (uvicorn's graceful shutdown)."""

        draining = False

        def handle_exit(self, sig: int, frame: object) -> None:
            if sig == signal.SIGTERM and not self.draining:
                self.draining = True
                app.state.draining = True
                delay = config.server.shutdown_delay
                if delay > 0:
                    threading.Timer(delay, super().handle_exit, (sig, frame)).start()
                    return
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    try:
        DrainingServer(uvicorn.Config(app, **options)).run()  # type: ignore[arg-type]
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
    return 0


def _metrics_directory(*, workers: int) -> str | None:
    """prometheus-client's multiprocess directory: $PROMETHEUS_MULTIPROC_DIR if set (emptied:
    stale files would add old values), else with --workers a temporary one of this instance's
    own. Returns the directory it made, for removal at exit."""
    directory = os.environ.get(_MULTIPROC_ENV)
    made = None
    if not directory and workers > 1:
        directory = made = tempfile.mkdtemp(prefix="router-metrics-")
    if directory:
        os.makedirs(directory, exist_ok=True)
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))
        os.environ[_MULTIPROC_ENV] = directory
    return made


def worker_app() -> object:
    """The app in a `--workers N` worker process, rebuilt from what `serve` decided."""
    from . import logs
    from .app import create_app
    from .reload import ConfigSource

    logs.setup()
    spec = orjson.loads(os.environ[_SERVE_ENV])
    source = ConfigSource(spec["config"], demo=spec["demo"], upstreams=spec["upstreams"], demo_key=DEMO_KEY)
    app = create_app(source.load(), source=source)
    _quiet_gc()
    return app


def _quiet_gc() -> None:
    """Fewer garbage-collector passes while serving. A request's objects live as long as it is
    in flight, past 700 allocations at any concurrency: at the default threshold each young
    pass scanned them and moved them to older generations, where they were scanned again.
    Most die by reference count, so the young generation rarely fills 10,000. And what exists
    now (modules, configuration, the app) lives as long as the process: frozen, it is never
    scanned again. Measured (gc.callbacks, make bench c=64, 5 s): ~1,100 passes and 0.28-0.43 s
    of ~6 s of CPU before, 8-11 passes and 0.03-0.05 s after. The price is memory: at 500
    requests in flight RSS is 84-90 MB in a single run against 73-77 (paired), and make bench's
    peak over all its runs 139 MB (bare) against 98. A young generation of 3,000 used as much."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])


def _banner(config: Config, host: str, port: int, *, demo: bool) -> None:
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    where = (
        "simulated " + ", ".join(sorted(config.providers)) if demo else ", ".join(sorted(config.providers))
    )
    print(f"router: serving {len(config.targets)} models from {where} on {url}", flush=True)
    model = next(iter(config.targets), "gpt-4o")
    demo_client = next((c for c in config.clients if c.demo_key), None)
    auth = ""
    if demo_client is not None:
        auth = f" -H {shlex.quote('Authorization: Bearer ' + (demo_client.demo_key or ''))}"
    elif config.clients:
        auth = ' -H "Authorization: Bearer $ROUTER_KEY"'
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]}).decode()
    print("try:", flush=True)
    print(
        f"  curl -s {url}/v1/chat/completions -H 'Content-Type: application/json'{auth} "
        f"-d {shlex.quote(body)}",
        flush=True,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
