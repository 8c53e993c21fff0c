"""Pure ASGI middleware: request ids, errors as OpenAI JSON, the body size limit.

None of them buffers a response body; a streamed answer passes through untouched.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .context import SCOPE_KEY, RequestContext, accept_request_id
from .errors import RequestTooLarge, RouterError

log = logging.getLogger("router")


class RequestIdMiddleware:
    """Gives every request a RequestContext and echoes its X-Request-Id on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
                break
        ctx = RequestContext(request_id=accept_request_id(given), started=time.perf_counter())
        scope[SCOPE_KEY] = ctx
        header = (b"x-request-id", ctx.request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ErrorMiddleware:
    """Turns any exception into an OpenAI-shaped error response; never a traceback to the client."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the client left: nobody to answer, nothing went wrong here
        except RouterError as error:
            if started:
                raise
            ctx = scope.get(SCOPE_KEY)
            # Which provider failed and how many tries it took; the settlement key; limits.
            await send_error(send, error, ctx.response_headers() if ctx else None)
        except Exception:
            context: RequestContext | None = scope.get(SCOPE_KEY)
            request_id = context.request_id if context else "unknown"
            log.exception("unhandled error", extra={"request_id": request_id})
            if started:
                return  # the connection closes; the client sees an incomplete response
            await send_error(
                send,
                RouterError(f"The server had an error processing your request (request id {request_id})."),
            )


async def send_error(send: Send, error: RouterError, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = error.body()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses bodies over `max_bytes` with 413: at once when Content-Length says so,
    or as soon as a chunked body passes the limit, without reading the rest."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    raise self._too_large()
                break
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"Request body is larger than the limit of {self.max_bytes} bytes (server.max_body_bytes).",
            headers={"Connection": "close"},
        )
