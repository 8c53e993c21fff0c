"""create_app(): routes, middleware, and the lifespan that runs a Runtime (and swaps it on reload)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import admin, gauges, handlers, metrics, probes, reload
from .api import COUNT_TOKENS_PATH, ENDPOINTS, PATHS
from .config import Config
from .middleware import Envelope, OnceHeaders
from .reload import ConfigSource, Reloader
from .runtime import Runtime
from .state import GuardedStore, open_outbox, open_store
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
        rt = Runtime(config, pools, state=_state(config, previous))
        if previous is not None:
            rt.health.adopt(previous.health)  # breakers, refused keys and drains survive a reload
        rt.tasks = [
            asyncio.create_task(probes.run(config, rt.proxy, rt.health)),
            asyncio.create_task(rt.ledger.keep()),
            asyncio.create_task(gauges.run(rt)),
        ]
        return rt

    retired: set[Runtime] = set()
    """Replaced runtimes not yet stopped: requests that started on them may still run."""

    async def stop(rt: Runtime) -> None:
        for task in rt.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        rt.tasks = []
        await rt.ledger.aclose()
        current: Runtime = app.state.runtime
        still_used = {r.ledger.state for r in (current, *retired) if r is not rt}
        if rt.ledger.state not in still_used:
            await rt.ledger.state.store.aclose()
        if rt.ledger.state.outbox not in {s.outbox for s in still_used}:
            await rt.ledger.state.outbox.aclose()  # its journal: released, or deleted when empty
        if upstream is None:
            await rt.upstream.aclose()

    async def retire(rt: Runtime) -> None:
        """Stop a replaced runtime once no request uses it (bounded by the request deadline)."""
        retired.add(rt)
        try:
            await asyncio.sleep(RETIRE_AFTER)
            await reload.drained(rt, timeout=rt.config.routing.timeouts.total)
        finally:
            stopping = asyncio.ensure_future(stop(rt))
            try:
                await asyncio.shield(stopping)
            except asyncio.CancelledError:
                await stopping  # shutdown: still finish it before anything closes under it
                raise
            finally:
                retired.discard(rt)

    def swap(rt: Runtime) -> None:
        old: Runtime | None = getattr(app.state, "runtime", None)
        if old is not None:
            # Its probes would use keys the new config may have replaced, and its gauges would
            # say what is no longer configured. (The new runtime's tasks have not run yet.)
            for task in old.tasks[0], old.tasks[2]:
                task.cancel()
            metrics.forget_gauges()
        once.use(rt.config)  # the headers a request may carry once follow its forward_headers
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
            if reloader is not None:
                reloader.closing = True  # a SIGHUP from here on reloads nothing
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            for task in watchers:
                task.cancel()
            while reloader is not None and reloader.retiring:
                for task in list(reloader.retiring):
                    task.cancel()  # a retiring runtime's `finally` stops it now
                    with contextlib.suppress(BaseException):
                        await task
            for task in watchers:
                with contextlib.suppress(BaseException):
                    await task
            await stop(app.state.runtime)
            metrics.process_exiting()

    routes = [
        # POSTs to these go straight to their handler (RouterApp); the routes answer other methods.
        *(Route(path, handlers.endpoint_handler(e), methods=["POST"]) for path, e in PATHS.items()),
        Route(COUNT_TOKENS_PATH, handlers.count_tokens, methods=["POST"]),
        Route("/v1/models", handlers.list_models, methods=["GET"]),
        Route("/models", handlers.list_models, methods=["GET"]),
        Route("/v1/models/{id:path}", handlers.retrieve_model, methods=["GET"]),
        Route("/models/{id:path}", handlers.retrieve_model, methods=["GET"]),
        Route("/healthz", handlers.healthz, methods=["GET"]),
        Route("/readyz", handlers.readyz, methods=["GET"]),
        Route("/metrics", handlers.metrics_text, methods=["GET"]),
        Route("/admin/providers", admin.providers, methods=["GET"]),
        Route("/admin/providers/{name}/drain", admin.drain, methods=["POST"]),
        Route("/admin/providers/{name}/undrain", admin.undrain, methods=["POST"]),
        Route("/admin/usage", admin.usage, methods=["GET"]),
    ]
    max_bytes = config.server.max_body_bytes
    once = OnceHeaders(config)
    apps = {
        e.name: Envelope(handlers.endpoint_app(e), max_bytes=max_bytes, once=once) for e in ENDPOINTS.values()
    }
    app = RouterApp(
        api={path: apps[e.name] for path, e in PATHS.items()},
        routes=routes,
        middleware=[Middleware(Envelope, max_bytes=max_bytes, once=once)],
        exception_handlers={HTTPException: handlers.http_exception},
        lifespan=lifespan,
    )
    return app


class RouterApp(Starlette):
    """Starlette, with the API endpoints' POSTs sent straight to their envelope and handler.

    Every request to Starlette passes its error and exception middleware, its router and
    its request/response wrapper, each wrapping `send` again; on the routes that carry the
    traffic that was ~6 % of the router's CPU (measured with py-spy at concurrency 64).
    Any other method on an API path still goes through Starlette (405, in the same shape).
    """

    def __init__(self, *, api: Mapping[str, ASGIApp], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._api.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is not None and scope["method"] == "POST":
            scope["app"] = self
            await endpoint(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def _state(config: Config, previous: Runtime | None) -> GuardedStore:
    """The shared store: a reload keeps the previous one unless the `state` section changed,
    and always keeps its outbox, so a process never holds two journals."""
    if previous is None:
        _warn_if_unexported(config)
        outbox = open_outbox(config.state, on_drop=metrics.SETTLEMENTS_DROPPED.inc)
        return open_store(config.state, on_error=metrics.state_error, outbox=outbox)
    if previous.config.state == config.state:
        return previous.ledger.state
    return open_store(config.state, on_error=metrics.state_error, outbox=previous.ledger.state.outbox)


def _warn_if_unexported(config: Config) -> None:
    """Records in Redis are trimmed by state.ledger_retention: without an exporter (a `ledger:`
    section, whose connection string may be given to the exporter alone) that is all there is."""
    if config.state.url.startswith("memory://") or config.ledger.declared:
        return
    keep = config.state.ledger_retention
    kept = f"the last {keep.records} records" if keep.records else f"{keep.seconds / 86400:g} days of records"
    log.warning(
        "ledger: no export configured (a `ledger:` section, and `router ledger export` running): "
        "Redis keeps %s per client (state.ledger_retention) and trims the rest",
        kept,
    )


def _on_sighup(handler: Callable[[], None]) -> None:
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)
    except (RuntimeError, ValueError, NotImplementedError):
        log.debug("SIGHUP reload is off: not serving from the main thread")
