"""The edge: every client connection bounded before anything reaches the app.

uvicorn's httptools protocol, subclassed (uvicorn.Config takes the class as `http=`): the same
parser, with what uvicorn leaves unbounded bounded here (README "Operations", `server.*`):

- the head (request line and headers) at most `max_header_bytes` and `max_headers`, else 431.
  Bytes are counted as they arrive, before the parser sees them, and the parser is never fed past
  the limit: a header that never ends costs the limit plus one read (uvloop reads at most 256 KiB),
  not its length;
- the head within `header_timeout`, counted from the connection's start (one that sends nothing is
  closed then) or, on a kept-alive connection, from the next request's first byte (the wait for
  that byte is `keepalive_timeout`: uvicorn's own timer);
- the body: each read within `body_idle_timeout`, all of it within `body_timeout` of the end of the
  head, else 408 (400 when the client went quiet still owing bytes of its Content-Length);
- at most `max_connections` open per process: one more is answered 503 and closed at once;
- what uvicorn answers in text/plain (two Content-Lengths, Content-Length with Transfer-Encoding,
  a bad length or header byte — llhttp refuses them all) in the OpenAI JSON shape instead.

An answer goes out only while no response has started on the connection; otherwise it just closes.
After an answer it closes too: what the client still sends is read and dropped for LINGER seconds
first, so that the client reads the answer rather than a reset.

One timer per connection, re-armed lazily: a phase change only moves a deadline, and the timer,
when it fires, re-arms for the deadline now due or acts on it. What a request pays for all this is
a length add and compare per read of its head, a clock read per read of its body, and nothing per
header. Connections to `metrics_port` get the same bounds and MetricsListener as their app.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import uvicorn
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from . import handlers, metrics
from .config import Server
from .errors import (
    HeadersTooLarge,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    RequestTimeout,
    RouterError,
    TooManyConnections,
)
from .responses import BytesResponse

log = logging.getLogger("router")

LINGER = 1.0
"""Seconds an answered connection keeps reading (and dropping) before it closes."""
_SLACK = 0.002  # a timer may fire this early (the loop's clock is read once per iteration)

_IDLE, _HEAD, _BODY, _CLOSING = 0, 1, 2, 3
"""A connection's phase. IDLE: its request is with the app, or it waits for the next one."""


class _Refused(Exception):
    """Raised in a parser callback to stop the parser; the answer is already chosen."""


class EdgeConfig(uvicorn.Config):
    """uvicorn's Config with router's `server` section, which every connection reads. Plain data,
    so it reaches `--workers` processes with the rest of the Config (pickled)."""

    def __init__(self, app: Any, *, limits: Server, **options: Any) -> None:
        super().__init__(app, http=EdgeProtocol, **options)
        self.limits = limits
        self.metrics_listener: ASGIApp | None = None

    def load(self) -> None:
        super().load()
        if self.limits.metrics_port is not None:
            self.metrics_listener = MetricsListener(self.loaded_app)


class MetricsListener:
    """The app behind `server.metrics_port`: GET /metrics (handlers.metrics_text, with the main
    app as `request.app`, so it sees the runtime and its config) and a JSON 404 for the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        scope["app"] = self.app
        path, method = scope["path"], scope["method"]
        error: RouterError | None = None
        if path != "/metrics":
            error = NotFound(f"Unknown route: {method} {path}. This port serves GET /metrics only.")
        elif method != "GET":
            error = MethodNotAllowed(f"Method {method} is not allowed on /metrics.")
        else:
            try:
                response = await handlers.metrics_text(Request(scope, receive))
            except Exception:
                log.exception("metrics listener error")
                error = RouterError("The server had an error producing the metrics.")
        if error is not None:
            response = BytesResponse(error.body(), status=error.http_status, headers=[])
        await response(scope, receive, send)


class EdgeProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: EdgeConfig,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = self.limits = config.limits
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]  # a float works
        self._max_head = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._header_timeout = limits.header_timeout
        self._body_idle = limits.body_idle_timeout
        self._body_total = limits.body_timeout
        self._metrics_listener = config.metrics_listener
        self._phase = _IDLE
        self._head = 0
        """Bytes of the head so far (whole reads: a read that also holds body counts whole)."""
        self._head_at = self._idle_at = self._total_at = self._close_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[RouterError, str] | None = None

    # -- the connection ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        metrics.CONNECTIONS_OPEN.inc()
        if self._metrics_listener is not None and self.server and self.server[1] == self.limits.metrics_port:
            self.app = self._metrics_listener  # never refused: a scrape is what shows the flood
        elif len(self.connections) > self.limits.max_connections:
            self._answer(
                TooManyConnections(
                    f"The server has {self.limits.max_connections} connections open (server.max_connections);"
                    " retry shortly."
                ),
                "max_connections",
                extra=b"retry-after: 1\r\n",
                linger=False,
            )
            return
        self._phase = _HEAD
        self._head_at = self.loop.time() + self._header_timeout
        self._arm(self._head_at)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        metrics.CONNECTIONS_OPEN.dec()
        self._phase = _IDLE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            self._idle_at = self.loop.time() + self._body_idle
        elif phase == _CLOSING:
            return  # answered: dropped, unread by anyone
        else:
            if phase == _IDLE:  # the next request's first bytes: its head's deadline starts
                self._phase = _HEAD
                self._head_at = self.loop.time() + self._header_timeout
                self._arm(self._head_at)
            self._head += len(data)
            if self._head > self._max_head:
                self._past_the_limit(data)
                return
        # uvicorn's data_received, with router's answers (inline: every read takes this path).
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # ws: none, so nothing is upgraded; uvicorn has handed the request to the app
        except httptools.HttpParserError as error:
            self._refuse(error)

    def _feed(self, data: bytes) -> None:
        """The same, for _past_the_limit."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as error:
            self._refuse(error)

    def _refuse(self, error: httptools.HttpParserError) -> None:
        """The parser stopped: at a refusal a callback chose, or at what llhttp rejects."""
        if self._refusal is None:
            cause = error.__context__ if isinstance(error, httptools.HttpParserCallbackError) else error
            self._refusal = (InvalidRequest(f"Invalid HTTP request: {str(cause)[:200]}."), "bad_request")
        self._answer(*self._refusal)

    def _past_the_limit(self, data: bytes) -> None:
        """This read took the head past max_header_bytes, unless the head ends within it: the
        parser gets only the bytes up to the limit, and the rest only if the head ended there."""
        fits = len(data) - (self._head - self._max_head)
        if fits > 0:
            self._feed(data[:fits])
        if self._phase == _HEAD:
            self._answer(
                HeadersTooLarge(
                    f"The request line and headers are larger than {self._max_head} bytes"
                    " (server.max_header_bytes)."
                ),
                "header_too_large",
            )
        elif self._phase != _CLOSING:
            self.data_received(data[fits:])

    def send_400_response(self, msg: str) -> None:
        self._answer(InvalidRequest(msg), "bad_request")  # uvicorn's own call, if any, in JSON too

    # -- the parser's callbacks ----------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_headers:
            self._refusal = (
                HeadersTooLarge(
                    f"The request has more than {self.limits.max_headers} headers (server.max_headers)."
                ),
                "too_many_headers",
            )
            raise _Refused
        super().on_headers_complete()
        self._phase = _BODY
        self._head = 0
        now = self.loop.time()
        self._idle_at = now + self._body_idle
        self._total_at = now + self._body_total

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _IDLE
        if (
            self.cycle.response_complete
            and self.timeout_keep_alive_task is None
            and not self.pipeline
            and not self.transport.is_closing()
        ):
            # Answered before its body was all here (a 401, say): uvicorn armed the keep-alive
            # timer then, and each read of the body since disarmed it.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    # -- deadlines -------------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= when:
                return  # fires first, then re-arms for what is due
            timer.cancel()
        self._timer = self.loop.call_at(when, self._expired)

    def _expired(self) -> None:
        self._timer = None
        phase = self._phase
        if phase == _HEAD:
            due = self._head_at
        elif phase == _BODY:
            due = min(self._idle_at, self._total_at)
        elif phase == _CLOSING:
            due = self._close_at
        else:
            return  # nothing awaited from the client
        if self.loop.time() < due - _SLACK:
            self._timer = self.loop.call_at(due, self._expired)
        elif phase == _CLOSING:
            self.transport.close()
        elif phase == _HEAD:
            if self._head == 0:  # not a byte: nobody to answer
                metrics.connections_closed("header_timeout").inc()
                self.transport.close()
            else:
                self._answer(
                    RequestTimeout(
                        f"The request line and headers did not arrive within {self._header_timeout:g}s"
                        " (server.header_timeout)."
                    ),
                    "header_timeout",
                )
        elif self.loop.time() >= self._idle_at - _SLACK and any(
            name == b"content-length" for name, _ in self.headers
        ):
            self._answer(
                InvalidRequest(
                    "The request body is shorter than its Content-Length: nothing more came for"
                    f" {self._body_idle:g}s (server.body_idle_timeout)."
                ),
                "body_timeout",
            )
        else:
            self._answer(
                RequestTimeout(
                    f"The request body did not arrive in time (server.body_idle_timeout {self._body_idle:g}s,"
                    f" server.body_timeout {self.limits.body_timeout:g}s)."
                ),
                "body_timeout",
            )

    # -- answers -----------------------------------------------------------------------------------

    def _answer(self, error: RouterError, reason: str, *, extra: bytes = b"", linger: bool = True) -> None:
        """End the connection at an edge limit, answering `error` where an answer can still go."""
        metrics.connections_closed(reason).inc()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        if self._phase == _BODY:  # this request's app may be waiting for the body
            answerable = cycle is not None and not cycle.response_started
        else:  # no request yet: an earlier one's response must be complete
            answerable = cycle is None or cycle.response_complete
        if self.pipeline or not answerable:
            transport.close()  # a response, this request's or an earlier one's, has the connection
            return
        if self._phase == _BODY:  # the app waits for a body that will not come: it sees the client leave
            cycle.disconnected = True
            cycle.message_event.set()
        body = error.body()
        head = [STATUS_LINE[error.http_status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n",
            extra,
            b"\r\n",
            body,
        ]
        transport.write(b"".join(head))
        if not linger or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._phase = _CLOSING
        self.flow.resume_reading()
        self._close_at = self.loop.time() + LINGER
        self._arm(self._close_at)
