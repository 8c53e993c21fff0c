"""How the choice of upstream client was made: a bare Starlette proxy over each candidate.

    python -m tests.bench.transports [--seconds 4] [--concurrency 1 64]

Starts the simulator, then for each variant a one-route Starlette proxy on its own core,
and measures it with the benchmark's load generator. Variants: httpx.AsyncClient with its
default pool and with large pool limits, httpx.AsyncClient over httpx-aiohttp's transport
and aiohttp alone (if those packages are installed), and router's own HTTP/1.1 client
(router/http1/, what router uses).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
from contextlib import asynccontextmanager
from typing import Any

import uvloop

from tests.bench import loadgen
from tests.bench.servers import ROOT, free_port, wait_for

VARIANTS = ["httpx-default", "httpx-limits", "httpx-aiohttp", "aiohttp", "router-http1"]
OPTIONAL = {"httpx-aiohttp": "httpx_aiohttp", "aiohttp": "aiohttp"}
"""Variants over packages router does not install: `pip install httpx-aiohttp aiohttp` to include them."""


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.upstream)
    cores = sorted(os.sched_getaffinity(0))
    proxy_core, other_core = (cores[1], cores[0]) if len(cores) > 1 else (None, None)
    sim_port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "router", "sim", "--dialect", "trinity", "--port", str(sim_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        if other_core is not None:
            os.sched_setaffinity(sim.pid, {other_core})
            os.sched_setaffinity(0, {other_core})
        wait_for(f"http://127.0.0.1:{sim_port}/_sim/stats")
        upstream = f"http://127.0.0.1:{sim_port}/chat/completions"
        rows = []
        for variant in VARIANTS:
            needed = OPTIONAL.get(variant)
            if needed is not None and importlib.util.find_spec(needed) is None:
                print(f"skipping {variant}: pip install {needed.replace('_', '-')} to include it")
                continue
            port = free_port()
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.bench.transports",
                    "--serve",
                    variant,
                    "--port",
                    str(port),
                    "--upstream",
                    upstream,
                ],
                cwd=ROOT,
                stderr=subprocess.DEVNULL,
            )
            try:
                if proxy_core is not None:
                    os.sched_setaffinity(proxy.pid, {proxy_core})
                wait_for(f"http://127.0.0.1:{port}/health")
                for concurrency in args.concurrency:
                    rows.append((variant, concurrency, measure(port, concurrency, args.seconds)))
            finally:
                os.kill(proxy.pid, signal.SIGTERM)
                proxy.wait(10)
        print(f"\n{'upstream client':<18} {'conc':>5} {'p50 ms':>8} {'p99 ms':>9} {'req/s':>8} {'errors':>7}")
        for variant, concurrency, r in rows:
            print(
                f"{variant:<18} {concurrency:>5} {r.p(0.5):8.3f} {r.p(0.99):9.3f} {r.rps:8.0f} {r.errors:7d}"
            )
    finally:
        os.kill(sim.pid, signal.SIGTERM)
        sim.wait(10)
    return 0


def measure(port: int, concurrency: int, seconds: float) -> loadgen.Result:
    body = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return uvloop.run(
        loadgen.run(
            "127.0.0.1",
            port,
            "/v1/chat/completions",
            body,
            concurrency=concurrency,
            seconds=seconds,
            headers=b"Authorization: Bearer bench\r\n",
        )
    )


def serve(variant: str, port: int, upstream: str) -> int:
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from router import http1

    state: dict[str, Any] = {}
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    url = httpx.URL(upstream)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        if variant == "httpx-default":
            state["client"] = httpx.AsyncClient()
        elif variant == "httpx-limits":
            state["client"] = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
            )
        elif variant == "httpx-aiohttp":
            from httpx_aiohttp import AiohttpTransport as Theirs  # optional: pip install httpx-aiohttp

            limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
            state["client"] = httpx.AsyncClient(transport=Theirs(limits=limits))
        elif variant == "router-http1":
            state["pool"] = http1.Pool(f"{url.scheme}://{url.netloc.decode()}", connect_timeout=5)
        else:
            import aiohttp

            state["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        yield

    async def proxy(request: Request) -> Response:
        body = await request.body()
        if "client" in state:
            answer = await state["client"].post(url, content=body, headers=headers)
            return Response(answer.content, status_code=answer.status_code, media_type="application/json")
        if "pool" in state:
            raw = [(k.encode(), v.encode()) for k, v in headers.items()]
            reply = await state["pool"].request(b"POST", url.raw_path, raw, body)
            content = await reply.read()
            reply.close()
            return Response(content, status_code=reply.status, media_type="application/json")
        async with state["session"].post(upstream, data=body, headers=headers) as answer:
            return Response(await answer.read(), status_code=answer.status, media_type="application/json")

    async def health(request: Request) -> Response:
        return Response(b"ok")

    app = Starlette(
        routes=[Route("/v1/chat/completions", proxy, methods=["POST"]), Route("/health", health)],
        lifespan=lifespan,
    )
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
