"""create_app(): routes, middleware, and the lifespan that opens the runtime's pools."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from . import admin, handlers, probes
from .config import Config
from .middleware import BodyLimitMiddleware, ErrorMiddleware, RequestIdMiddleware
from .runtime import Runtime
from .upstream import Upstream


def create_app(config: Config, *, upstream: Upstream | None = None) -> Starlette:
    """The router as an ASGI app. `upstream` is for tests that bring their own transport."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pools = upstream or Upstream.pooled(config.providers, connect_timeout=config.routing.timeouts.connect)
        runtime = app.state.runtime = Runtime(config, pools)
        tasks = [
            asyncio.create_task(probes.run(config, runtime.proxy, runtime.health)),
            asyncio.create_task(runtime.ledger.keep()),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await runtime.ledger.aclose()
            await runtime.ledger.state.store.aclose()
            await pools.aclose()

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
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(RequestIdMiddleware),
            Middleware(ErrorMiddleware),
            Middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes),
        ],
        exception_handlers={HTTPException: handlers.http_exception},
        lifespan=lifespan,
    )
