"""The envelope every request gets, as one pure ASGI layer: a RequestContext and its
X-Request-Id, the body size limit, an error in the client's API shape for any failure (never
a traceback), and — for the API endpoints — its metrics and log line when it ends.

One layer with one send wrapper, not four: each ASGI layer costs a coroutine frame and a
wrapped `send` per message, and at concurrency 64 the four middlewares this replaced took
~8 % of the router's CPU (measured with py-spy, README "Performance"). None of it buffers a
response body; a streamed answer passes through untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import CLIENT_CLOSED, finished
from .api import ERROR_SHAPES, PATHS, REQUEST_ID_HEADERS
from .api.endpoint import openai_error
from .config import Config
from .context import SCOPE_KEY, RequestContext, accept_request_id
from .errors import InvalidRequest, RequestTooLarge, RouterError

log = logging.getLogger("router")

READ_ONCE = (
    b"authorization",
    b"x-api-key",
    b"x-request-id",
    b"x-idempotency-key",
    b"idempotency-key",
    b"x-conversation-id",
)
"""The request headers router itself reads (or always forwards)."""


class OnceHeaders:
    """The one rule for repeated request headers: each header router reads or forwards
    (READ_ONCE, and every provider's `forward_headers`) may come once; twice is a 400 naming
    it. Reading would take the first and forwarding the last; refusing both ways agrees.

    Each name has its own bit, so the envelope's one pass over the headers finds a repeat
    with an int, not a set per request. Set again when a reload swaps the config."""

    __slots__ = ("bits",)

    def __init__(self, config: Config | None = None) -> None:
        self.bits: dict[bytes, int] = {}
        self.use(config)

    def use(self, config: Config | None) -> None:
        forwarded = (h for p in config.providers.values() for h in p.forward_headers) if config else ()
        self.bits = _bits(forwarded)


def _bits(forwarded: Iterable[str]) -> dict[bytes, int]:
    names = dict.fromkeys([*READ_ONCE, *(h.lower().encode("ascii") for h in forwarded)])
    return {name: 1 << i for i, name in enumerate(names)}


class Envelope:
    def __init__(self, app: ASGIApp, *, max_bytes: int, once: OnceHeaders | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.once = once or OnceHeaders()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        length = None
        once = self.once.bits
        seen = 0  # one bit per header of `once` met so far (a small int: no allocation)
        repeated = None
        for name, value in scope["headers"]:
            bit = once.get(name)
            if bit is not None:
                if seen & bit:
                    repeated = name
                    if name == b"x-request-id":
                        given = None  # neither is echoed: the 400 gets an id of its own
                    break
                seen |= bit
                if name == b"x-request-id":
                    given = value
            elif name == b"content-length" and length is None:
                length = value
        ctx = RequestContext(request_id=accept_request_id(given), started=time.perf_counter())
        path = scope["path"]
        endpoint = PATHS.get(path)
        if endpoint is not None:
            ctx.endpoint = endpoint.name
        scope[SCOPE_KEY] = ctx
        request_id = ctx.request_id.encode()
        id_headers = [(b"x-request-id", request_id)]
        own = REQUEST_ID_HEADERS.get(path)
        if own is not None:
            id_headers.append((own, request_id))
        status = CLIENT_CLOSED
        started = False

        async def enveloped_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                message["headers"] = [*message.get("headers", ()), *id_headers]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                ctx.ended = time.perf_counter()

        try:
            if repeated is not None:
                header = repeated.decode("latin-1")
                raise InvalidRequest(
                    f"The {header} header was sent more than once; send it once.", param=header
                )
            if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
                raise self._too_large()  # at once, without reading the body
            await self.app(scope, receive if length is not None else self._limited(receive), enveloped_send)
        except ClientDisconnect:
            pass  # the client left: nobody to answer, nothing went wrong here
        except RouterError as error:
            if started:
                raise  # the connection closes; the client sees the answer cut
            # Which provider failed and how many tries it took; the settlement key; limits.
            await send_error(enveloped_send, error, ctx.response_headers(), shape=ERROR_SHAPES.get(path))
        except Exception:
            log.exception("unhandled error", extra={"request_id": ctx.request_id})
            if not started:  # else the connection closes; the client sees the answer cut
                await send_error(
                    enveloped_send,
                    RouterError(
                        f"The server had an error processing your request (request id {ctx.request_id})."
                    ),
                    shape=ERROR_SHAPES.get(path),
                )
        finally:
            if ctx.endpoint is not None:
                finished(ctx, status)

    def _limited(self, receive: Receive) -> Receive:
        """A chunked body: refused as soon as it passes the limit, without reading the rest."""
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise self._too_large()
            return message

        return limited_receive

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"Request body is larger than the limit of {self.max_bytes} bytes (server.max_body_bytes).",
            headers={"Connection": "close"},
        )


async def send_error(
    send: Send,
    error: RouterError,
    extra: list[tuple[bytes, bytes]] | None = None,
    *,
    shape: Callable[[RouterError], tuple[int, bytes]] | None = None,
) -> None:
    """`error` as the client's API shapes it (OpenAI's unless `shape` says otherwise)."""
    status, body = (shape or openai_error)(error)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
