"""ASGI responses: a finished body as bytes, and a relayed SSE stream.

The stream response owns everything after the commit point: the idle and total timers,
the client leaving, and how the stream ends (`[DONE]`, or an error event and no `[DONE]`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from . import logs, metrics, sse
from .api import StreamTranslation
from .disconnect import DisconnectWatch
from .errors import DeadlineExceeded, RouterError, UpstreamError, UpstreamTimeout
from .relay import StreamRelay
from .types import RawHeaders
from .upstream import UpstreamResponse
from .watchdog import Watchdog

log = logging.getLogger("router.stream")

FINISH_GRACE = 1.0
"""Seconds to wait for the usage chunk and `[DONE]` after the answer finished, before
closing the client's stream ourselves (some providers never send `[DONE]`)."""

SSE_HEADERS: RawHeaders = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell nginx-style proxies in front not to buffer
]


class BytesResponse:
    __slots__ = ("after", "body", "headers", "status")

    def __init__(
        self, body: bytes, *, status: int = 200, headers: RawHeaders, media_type: bytes = b"application/json"
    ):
        self.body = body
        self.status = status
        self.headers = [(b"content-type", media_type), (b"content-length", str(len(body)).encode()), *headers]
        self.after: Awaitable[None] | None = None
        """What the client need not wait for (a settlement's reply): awaited once the body is
        sent, or failed to send, before the request's task ends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            await send({"type": "http.response.body", "body": self.body})
        finally:
            if self.after is not None:
                after, self.after = self.after, None
                await after


class StreamEnding(Protocol):
    """Who settles a stream when it ends (the request's exchange)."""

    async def ended(self, response: StreamResponse) -> None:
        """The stream ended, before its last bytes are sent: settle, and wait for it."""

    def left(self, response: StreamResponse) -> None:
        """The client left or the task was cancelled: settle without waiting."""


class StreamResponse:
    """Sends a committed stream: the held-back events first, then the rest as it arrives."""

    def __init__(
        self,
        *,
        upstream: UpstreamResponse,
        relay: StreamRelay,
        first: bytes,
        headers: RawHeaders,
        deadline: float,
        idle: float,
        ending: StreamEnding,
        watch: DisconnectWatch | None,
        keep: bool,
        translation: StreamTranslation | None = None,
    ):
        self._upstream = upstream
        self._relay = relay
        self._translation = translation
        """The client's API, when it is not Chat Completions: the relayed events, translated."""
        self._done = b""
        """`[DONE]` (or what a translation makes of it), once read: it goes last, after the
        settlement, so a client that reads its usage once its stream ended finds it."""
        # (A translation translates `first` when it is sent: what it raises then is the stream's
        # to settle.)
        if translation is None and relay.done and first.endswith(sse.DONE_EVENT):
            # the whole answer came with the commit
            first, self._done = first[: -len(sse.DONE_EVENT)], sse.DONE_EVENT
        self._first = first
        self._headers = [*SSE_HEADERS, *headers]
        self._deadline = deadline
        self._idle = idle
        self._ending = ending
        self._watch = watch
        """Started by the exchange before the commit point; None when the stream is kept."""
        self._keep = keep
        """Keep what is sent, for a replay, and read the provider's stream to its end even if
        the client leaves (an idempotency key: the retry gets the whole answer replayed).
        Bounded by the request's deadline."""
        self.sent: list[bytes] | None = [] if keep else None
        """Everything sent, when kept for a replay."""
        self.outcome = "pending"
        """How it ended: completed, error, or client_disconnected."""
        self.failure: UpstreamError | None = None
        """What ended the stream early, when outcome is "error"."""
        self._settled = False

    @property
    def relay(self) -> StreamRelay:
        return self._relay

    def _translated(self, events: list[bytes], done: bool) -> bytes:
        """Relayed events in the client's API; what `[DONE]` becomes is held back as the end."""
        assert self._translation is not None
        if done and events and events[-1] == sse.DONE_EVENT:
            out = self._translation.events(events[:-1])
            self._done = self._translation.events(events[-1:])
            return out
        return self._translation.events(events)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = None if self._keep else self._watch or DisconnectWatch(receive)
        relay = self._relay
        if self.sent is not None:
            send = self._keeping(send, self.sent)
        try:
            first = self._first
            if self._translation is not None:
                first = self._translated(sse.EventSplitter().feed(first), relay.done)
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            tail = await self._pump(send)
            if watch is not None:
                watch.stop()  # the end is ours to send; a disconnect now changes nothing
            if self.sent is not None:
                self.sent.append(tail)
            self._settled = True
            await self._ending.ended(self)  # before the end: a retry after it finds the answer stored
            await send({"type": "http.response.body", "body": tail, "more_body": False})
        except asyncio.CancelledError:
            if watch is None or not watch.left():
                raise
            self.outcome = "client_disconnected"
        finally:
            if watch is not None:
                watch.stop()
            if self.outcome == "completed":  # its connection is pooled once the body ends
                self._upstream.release()
            else:
                self._upstream.close()
            metrics.stream_outcomes(self.outcome if self.outcome != "pending" else "error").inc()
            if not self._settled:
                self._settled = True
                self._ending.left(self)
            report_dropped(relay)

    @staticmethod
    def _keeping(send: Send, sent: list[bytes]) -> Send:
        async def keeping_send(message: Any) -> None:
            body = message.get("body")
            if body and message.get("more_body"):
                sent.append(body)
            await send(message)

        return keeping_send

    async def _pump(self, send: Send) -> bytes:
        """Relay until the stream ends; returns the last bytes to send."""
        relay = self._relay
        translation = self._translation
        next_chunk = self._upstream.next_chunk
        try:
            if translation is not None and translation.failure is not None:
                raise translation.failure  # in what was sent with the commit point
            try:
                with Watchdog(idle=self._idle, deadline=self._deadline) as watch:
                    while not relay.done:  # the whole answer may have come with the commit
                        if relay.finished and not relay.usage_pending:
                            # The answer finished: wait only briefly for [DONE] — unless the
                            # usage router asked for has not come yet: worth the idle timeout.
                            watch.wait_at_most(FINISH_GRACE)
                        data = await next_chunk()
                        if data is None:
                            break
                        if translation is not None:
                            out = self._translated(relay.feed_events(data), relay.done)
                        else:
                            out = relay.feed(data)
                            if relay.done and out.endswith(sse.DONE_EVENT):
                                out, self._done = out[: -len(sse.DONE_EVENT)], sse.DONE_EVENT
                        if not relay.only_dropped:  # garbage is no sign of life
                            watch.fed()
                        if out:
                            watch.hold()  # a slow client is not a silent provider
                            await send({"type": "http.response.body", "body": out, "more_body": True})
                            watch.fed()
                        if relay.failure is not None:
                            raise relay.failure
                        if translation is not None and translation.failure is not None:
                            raise translation.failure
            except TimeoutError:
                if not relay.finished:
                    raise self._timeout(asyncio.get_running_loop().time()) from None
            if translation is not None:
                tail = self._done + translation.events(relay.end_events())
                if translation.failure is not None:  # its error event ends `tail`
                    self._done = tail
                    raise translation.failure
            else:
                tail = self._done + relay.end()
            self.outcome = "completed"
            return tail
        except UpstreamError as error:
            # After the commit point nothing can be retried: end with an error event and
            # no [DONE], so no client mistakes a cut answer for a whole one.
            self.outcome = "error"
            self.failure = error
            if translation is None:
                return error_event(error)
            # A translation's own failure ends what it returned last, sent or held as the end
            # (failed() then adds nothing); any other failure ends with failed()'s events.
            return self._done + translation.failed(error)

    def _timeout(self, now: float) -> UpstreamTimeout:
        provider = self._relay.provider
        if now >= self._deadline:
            return DeadlineExceeded(f"{provider}: the request deadline passed mid-answer", provider=provider)
        return UpstreamTimeout(f"{provider}: the stream stalled for {self._idle:g}s", provider=provider)


def report_dropped(relay: StreamRelay) -> None:
    """A stream's malformed events: counted, and logged once for the stream."""
    if relay.dropped:
        metrics.stream_events_dropped(relay.provider).inc(relay.dropped)
        logs.event(
            log,
            logging.WARNING,
            "dropped malformed stream events",
            provider=relay.provider,
            dropped=relay.dropped,
        )


def error_event(error: RouterError) -> bytes:
    """SPEC §8: one `data:` event in the OpenAI error shape, with no `event:` line."""
    return sse.data_event(error.body())
