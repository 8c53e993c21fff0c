"""`router serve`: bind, say where, and run the app under uvicorn (one process or --workers N)."""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import TYPE_CHECKING, Any

import orjson

from . import config as configuration
from .config import Config, Server

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from .reload import ConfigSource
    from .upstream import Upstream

DEMO_KEY = "demo-provider-key"
_SERVE_ENV = "ROUTER_SERVE_SPEC"  # how `serve --workers N` hands its choices to worker processes
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read when prometheus_client is imported: set it first
BACKLOG = 2048  # uvicorn's default
GC_YOUNG = 10_000
"""Net new objects between the garbage collector's young passes (Python's default: 700)."""


def serve(config: Config, args: argparse.Namespace) -> int:
    """`router serve` with its config loaded: checks, binds, prints the banner, runs uvicorn."""
    host = (args.host or config.server.host).removeprefix("[").removesuffix("]")  # [::1] too
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
    sock = _listen(host, port)
    if sock is None:
        return 1
    sockets = [sock]
    if config.server.metrics_port is not None:  # same host, its own listener (edge.MetricsListener)
        metrics_sock = _listen(host, config.server.metrics_port)
        if metrics_sock is None:
            sock.close()
            return 1
        sockets.append(metrics_sock)
    sims = []
    try:
        if args.demo:
            from .sim import SimServer

            sims = [SimServer(p.dialect or name).start_in_thread() for name, p in config.providers.items()]
            config = config.with_upstreams(
                {name: s.base_url for name, s in zip(config.providers, sims, strict=True)}, DEMO_KEY
            )
        _banner(config, sockets, demo=args.demo)
        return _run_uvicorn(config, sockets, args)
    finally:
        for sim in sims:
            sim.stop()
        for listening in sockets:
            listening.close()


def _listen(host: str, port: int) -> socket.socket | None:
    """The listening socket, bound here rather than by uvicorn: a port in use, a host this
    machine has no address for or a privileged port is one line on stderr (and exit 1) before
    any banner, and the banner can name the port `--port 0` got. None after such a line."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restarts reuse the port
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        reason = error.strerror or str(error)
        print(
            f"router: cannot listen on {_address(host, port)}: {reason[:1].lower()}{reason[1:]}",
            file=sys.stderr,
        )
        return None
    sock.set_inheritable(True)  # --workers: the worker processes serve this socket
    return sock


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def uvicorn_config(app: Any, server: Server, **options: Any) -> uvicorn.Config:
    """How router runs under uvicorn: `serve` (one process or each of --workers N) and the tests'
    RouterThread alike. The protocol is edge.EdgeProtocol, which bounds each connection by
    `server` (its limits and deadlines)."""
    from .edge import EdgeConfig

    settings: dict[str, Any] = {
        "loop": "uvloop",
        "ws": "none",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,  # logs.setup(): JSON lines
        "log_level": "warning",
        "server_header": False,
        # router reads no client address (X-Forwarded-For is neither trusted nor logged), so
        # uvicorn's proxy-headers layer would only cost a wrapper per request.
        "proxy_headers": False,
        "timeout_graceful_shutdown": server.grace,
        "backlog": BACKLOG,
        **options,
    }
    return EdgeConfig(app, limits=server, **settings)


def router_app(
    config: Config, *, source: ConfigSource | None = None, upstream: Upstream | None = None
) -> Starlette:
    """The app as served. With `server.metrics_port` the main port has no /metrics route (it
    answers 404, like any unknown route): the metrics listener serves it."""
    from .app import create_app

    app = create_app(config, source=source, upstream=upstream)
    if config.server.metrics_port is not None:
        app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) != "/metrics"]
    return app


def _run_uvicorn(config: Config, sockets: list[socket.socket], args: argparse.Namespace) -> int:
    import uvicorn

    # Before anything imports prometheus_client: it picks its storage from this variable.
    made = _metrics_directory(workers=args.workers)
    from . import logs
    from .reload import ConfigSource

    logs.setup()
    path = args.config or configuration.default_path()
    upstreams = {name: p.base_url for name, p in config.providers.items()} if args.demo else None
    if args.workers > 1:
        os.environ[_SERVE_ENV] = orjson.dumps(
            {"config": path, "demo": args.demo, "upstreams": upstreams}
        ).decode()
        from uvicorn.supervisors import Multiprocess

        # What uvicorn.run does with workers, on the sockets bound above: each worker serves both
        # the main port and the metrics port (whichever worker answers a scrape reports them all).
        workers = uvicorn_config("router.serve:worker_app", config.server, factory=True, workers=args.workers)
        try:
            Multiprocess(workers, sockets=sockets).run()
        except KeyboardInterrupt:
            pass
        finally:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
        return 0
    source = ConfigSource(path, demo=args.demo, upstreams=upstreams, demo_key=DEMO_KEY)
    app = router_app(config, source=source)
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
        DrainingServer(uvicorn_config(app, config.server)).run(sockets=sockets)
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
    from .reload import ConfigSource

    logs.setup()
    spec = orjson.loads(os.environ[_SERVE_ENV])
    source = ConfigSource(spec["config"], demo=spec["demo"], upstreams=spec["upstreams"], demo_key=DEMO_KEY)
    app = router_app(source.load(), source=source)
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


def _banner(config: Config, sockets: list[socket.socket], *, demo: bool) -> None:
    host, port = sockets[0].getsockname()[:2]  # what was bound: the port `--port 0` got
    # Every interface includes loopback: the line to try uses it.
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{_address(reach, port)}"
    where = (
        "simulated " + ", ".join(sorted(config.providers)) if demo else ", ".join(sorted(config.providers))
    )
    print(
        f"router: serving {len(config.targets)} models from {where} on http://{_address(host, port)}",
        flush=True,
    )
    model = next((m for m, targets in config.targets.items() if targets[0].route.kind == "chat"), "gpt-4o")
    demo_client = next((c for c in config.clients if c.demo_key), None)
    auth = ""
    if demo_client is not None:
        auth = f" -H {shlex.quote('Authorization: Bearer ' + (demo_client.demo_key or ''))}"
    elif config.clients:
        auth = ' -H "Authorization: Bearer $ROUTER_KEY"'
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "Hello!"}]}).decode()
    print("try:", flush=True)
    print(
        f"  curl -s {shlex.quote(url + '/v1/chat/completions')} -H 'Content-Type: application/json'{auth} "
        f"-d {shlex.quote(body)}",
        flush=True,
    )
    for metrics_sock in sockets[1:]:
        print(
            f"router: metrics on http://{_address(host, metrics_sock.getsockname()[1])}/metrics", flush=True
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
