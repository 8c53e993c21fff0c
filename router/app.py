"""create_app(): routes, middleware, and the lifespan that runs a Runtime (and swaps it on reload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from . import admin, gauges, handlers, probes, reload
from .access import AccessMiddleware
from .config import Config
from .middleware import BodyLimitMiddleware, ErrorMiddleware, RequestIdMiddleware
from .reload import ConfigSource, Reloader
from .runtime import Runtime
from .upstream import Upstream

log = logging.getLogger("router")

RETIRE_AFTER = 2.0
"""Seconds a replaced runtime is kept before it is checked for requests still using it: one
may be between its first line and its admission."""


def create_app(
    config: Config, *, upstream: Upstream | None = None, source: ConfigSource | None = None
) -> Starlette:
    """The router as an ASGI app. `upstream` is for tests that bring their own transport;
    `source` makes the config reloadable (SIGHUP, or the file changing)."""

    async def start(config: Config, previous: Runtime | None) -> Runtime:
        pools = upstream or Upstream.pooled(config.providers, connect_timeout=config.routing.timeouts.connect)
        keep_state = previous is not None and previous.config.state == config.state
        rt = Runtime(config, pools, state=previous.ledger.state if keep_state and previous else None)
        rt.tasks = [
            asyncio.create_task(probes.run(config, rt.proxy, rt.health)),
            asyncio.create_task(rt.ledger.keep()),
            asyncio.create_task(gauges.run(rt)),
        ]
        return rt

    async def retire(rt: Runtime) -> None:
        """Stop a runtime once no request uses it; its pools and (unless shared) store close."""
        current: Runtime | None = getattr(app.state, "runtime", None)
        if current is not rt:
            await asyncio.sleep(RETIRE_AFTER)
            await reload.drained(rt, timeout=rt.config.routing.timeouts.total)
        for task in rt.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await rt.ledger.aclose()
        if current is rt or current is None or current.ledger.state is not rt.ledger.state:
            await rt.ledger.state.store.aclose()
        if upstream is None or current is rt:
            await rt.upstream.aclose()

    def swap(rt: Runtime) -> None:
        app.state.runtime = rt

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.draining = False
        app.state.runtime = await start(config, None)
        watchers: list[asyncio.Task[None]] = []
        reloader = None
        if source is not None:
            reloader = Reloader(source, lambda: app.state.runtime, swap)
            watchers.append(asyncio.create_task(reloader.watch(start, retire)))
            _on_sighup(lambda: reloader.trigger("SIGHUP", start, retire) if reloader else None)
        try:
            yield
        finally:
            for task in watchers:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if reloader is not None:
                for task in list(reloader.retiring):
                    task.cancel()
            await retire(app.state.runtime)

    routes = [
        Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/chat/completions", handlers.chat_completions, methods=["POST"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        Route("/models", handlers.list_models, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
        Route("/readyz", handlers.readyz, methods=["GET"]),
        Route("/metrics", handlers.metrics_text, methods=["GET"]),
        Route("/admin/providers", admin.providers, methods=["GET"]),
        Route("/admin/providers/{name}/drain", admin.drain, methods=["POST"]),
        Route("/admin/providers/{name}/undrain", admin.undrain, methods=["POST"]),
        Route("/admin/usage", admin.usage, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(AccessMiddleware),
            Middleware(ErrorMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes),
        ],
        exception_handlers={HTTPException: handlers.http_exception},
        lifespan=lifespan,
    )
    return app


def _on_sighup(handler: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)
    except (RuntimeError, ValueError, NotImplementedError):
        log.debug("SIGHUP reload is off: not serving from the main thread")
