"""One attempt at one target: send the request, and read it to an answer the client can be given.

An attempt is all-or-nothing up to the stream's commit point: it either returns a response
ready to send (a whole answer, or a stream whose first content is in hand), or raises an
UpstreamError that says whether another attempt may help. It never sends the client
anything itself, so the caller can always try elsewhere.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping

import orjson

from . import classify, envelope, translate
from .config import Config, Target
from .context import RequestContext
from .errors import DeadlineExceeded, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .redact import Redactor, is_credential_header
from .relay import StreamRelay
from .responses import BytesResponse, StreamResponse, report_dropped
from .types import JSON, RawHeaders, Usage
from .upstream import Upstream, UpstreamResponse, base_headers

_HEADER_VALUE = re.compile(rb"^[\x20-\x7e]{1,1024}\Z")

Response = BytesResponse | StreamResponse

__all__ = ["Response", "Sender", "StreamResponse"]


class Sender:
    def __init__(self, config: Config, upstream: Upstream):
        self._upstream = upstream
        self._timeouts = config.routing.timeouts
        self._base_headers: dict[tuple[Target, bool], RawHeaders] = {
            (t, stream): base_headers(t, stream=stream)
            for targets in config.targets.values()
            for t in targets
            for stream in (False, True)
        }
        self._forward = {
            name: tuple(h.lower().encode() for h in p.forward_headers) for name, p in config.providers.items()
        }
        self._credentials = {
            name: frozenset(h.lower().encode() for h in p.forward_headers if is_credential_header(h))
            for name, p in config.providers.items()
        }
        """Forwarded headers whose values are credentials: taken out of the provider's text too."""
        self._redact = Redactor(k.secret for p in config.providers.values() for k in p.keys)
        """Every provider key: what provider text must never carry to a client or a log."""

    async def send(
        self,
        ctx: RequestContext,
        body: JSON,
        target: Target,
        upstream_body: JSON,
        client_headers: Mapping[bytes, bytes],
        deadline: float,
        *,
        on_stream_end: Callable[[str, UpstreamError | None], None],
        prompt_tokens: int = 0,
    ) -> Response:
        """One attempt. `on_stream_end(outcome, error)` is called when a returned stream ends.
        `prompt_tokens` is router's estimate of the prompt, for answers that report no usage."""
        stream = bool(body.get("stream"))
        headers, redact = self._headers(ctx, target, client_headers, stream=stream)
        ctx.provider = target.provider.name
        ctx.target = target
        ctx.attempts += 1
        payload = orjson.dumps(upstream_body)
        answer_id = "chatcmpl-" + (ctx.settlement_key or ctx.request_id).partition("_")[2]
        if stream:
            relay = StreamRelay(
                provider=target.provider.name,
                wants_usage=translate.client_wants_usage(body),
                expects_usage=target.provider.stream_usage,
                choices=body.get("n") or 1,
                upstream_model=target.route.upstream,
                answer_id=answer_id,
                created=int(time.time()),
                prompt_tokens=prompt_tokens,
                keep_chunk_usage=translate.client_wants_usage(body, every_chunk=True),
                redact=redact,
            )
            return await self._open_stream(ctx, target, payload, headers, deadline, relay, on_stream_end)
        return await self._complete(ctx, target, payload, headers, deadline, answer_id, prompt_tokens, redact)

    def _headers(
        self, ctx: RequestContext, target: Target, client_headers: Mapping[bytes, bytes], *, stream: bool
    ) -> tuple[RawHeaders, Redactor]:
        """What to send, and what to take out of the provider's text: every provider key, and
        the value of any credential the client had forwarded (such configs only)."""
        headers = [*self._base_headers[target, stream], (b"x-request-id", ctx.request_id.encode())]
        conversation = client_headers.get(b"x-conversation-id")
        if conversation is not None and _HEADER_VALUE.match(conversation):
            headers.append((b"x-conversation-id", conversation))
        credentials = self._credentials[target.provider.name]
        sent: list[str] | None = None
        for name in self._forward[target.provider.name]:
            value = client_headers.get(name)
            if (
                value is not None
                and name not in (b"x-request-id", b"x-conversation-id")
                and _HEADER_VALUE.match(value)
            ):
                headers.append((name, value))
                if name in credentials:
                    if sent is None:
                        sent = []
                    sent.append(value.decode("ascii"))
        return headers, self._redact.plus(sent) if sent else self._redact

    # -- non-streaming -----------------------------------------------------------

    async def _complete(
        self,
        ctx: RequestContext,
        target: Target,
        payload: bytes,
        headers: RawHeaders,
        deadline: float,
        answer_id: str,
        prompt_tokens: int,
        redact: Redactor,
    ) -> BytesResponse:
        provider = target.provider.name
        loop = asyncio.get_running_loop()
        started = time.perf_counter()  # timings; loop.time() (ms resolution under uvloop) is for deadlines
        response: UpstreamResponse | None = None
        try:
            # A non-streaming answer arrives whole, so its wait is the generation time:
            # bounded by `response`, not by `first_token`.
            async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.response)) as timer:
                response = await self._upstream.send(target, payload, headers)
                ctx.upstream_headers = ctx.first_token = time.perf_counter() - started
                timer.reschedule(min(deadline, loop.time() + self._timeouts.idle))  # one timer, not two
                answer = await response.read()
        except TimeoutError:
            raise self._timeout(
                provider, loop.time(), deadline, headers_arrived=response is not None
            ) from None
        finally:
            ctx.upstream_wait += time.perf_counter() - started
            if response is not None:
                response.close()
        if response.status != 200:
            raise _status_error(provider, response, answer, redact)
        parsed = _check_completion(provider, answer, redact)
        ctx.usage = Usage.from_json(parsed.get("usage"))
        if envelope.complete(
            parsed,
            answer_id=answer_id,
            model=target.route.upstream,
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
        ):
            answer = orjson.dumps(parsed)
            if ctx.usage is None:  # the estimate it now carries is what gets settled
                ctx.usage, ctx.usage_estimated = Usage.from_json(parsed["usage"]), True
        return BytesResponse(answer, headers=ctx.response_headers())

    # -- streaming -----------------------------------------------------------------

    async def _open_stream(
        self,
        ctx: RequestContext,
        target: Target,
        payload: bytes,
        headers: RawHeaders,
        deadline: float,
        relay: StreamRelay,
        on_end: Callable[[str, UpstreamError | None], None],
    ) -> StreamResponse:
        """Send the request and read up to the commit point; the rest is StreamResponse's."""
        provider = target.provider.name
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        first_token_by = min(deadline, loop.time() + self._timeouts.first_token)
        response: UpstreamResponse | None = None
        committed = False
        try:
            async with asyncio.timeout_at(first_token_by):
                response = await self._upstream.send(target, payload, headers)
            ctx.upstream_headers = time.perf_counter() - started
            if response.status != 200:
                async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.idle)):
                    raise _status_error(provider, response, await response.read(), relay.redact)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.idle)):
                    answer = await response.read()
                raise _status_error(provider, response, answer, relay.redact, expected="an event stream")
            first = await self._until_commit(relay, response, first_token_by)
            ctx.first_token = time.perf_counter() - started
            committed = True
        except TimeoutError:
            raise self._timeout(
                provider, loop.time(), deadline, headers_arrived=response is not None, first_token=True
            ) from None
        finally:
            ctx.upstream_wait += time.perf_counter() - started
            if response is not None and not committed:
                response.close()
                report_dropped(relay)
        return StreamResponse(
            upstream=response,
            relay=relay,
            first=first,
            headers=ctx.response_headers(),
            deadline=deadline,
            idle=self._timeouts.idle,
            on_end=on_end,
        )

    async def _until_commit(
        self, relay: StreamRelay, response: UpstreamResponse, first_token_by: float
    ) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            async with asyncio.timeout_at(min(first_token_by, loop.time() + self._timeouts.idle)):
                data = await response.next_chunk()
            if data is None:
                return relay.end()  # raises: nothing was committed
            first = relay.feed(data)
            if relay.failure is not None:
                raise relay.failure  # nothing reached the client yet: a plain error, retryable
            if relay.committed:
                return first

    def _timeout(
        self, provider: str, now: float, deadline: float, *, headers_arrived: bool, first_token: bool = False
    ) -> UpstreamTimeout:
        if now >= deadline:
            return DeadlineExceeded(
                f"{provider}: the request deadline passed before an answer", provider=provider
            )
        if not headers_arrived and not first_token:
            what = f"no answer within {self._timeouts.response:g}s"
        elif not headers_arrived:
            what = f"no answer within {self._timeouts.first_token:g}s"
        elif first_token:
            what = f"no first token within {self._timeouts.first_token:g}s"
        else:
            what = f"the answer stalled for {self._timeouts.idle:g}s"
        return UpstreamTimeout(f"{provider}: {what}", provider=provider)


def _status_error(
    provider: str,
    response: UpstreamResponse,
    answer: bytes,
    redact: Redactor,
    *,
    expected: str | None = None,
) -> UpstreamError:
    if response.status == 200:
        # Some resellers answer errors with 200 and an error body.
        parsed = classify.read_answer(502, answer, redact=redact)
        if parsed.message:
            return classify.to_error(provider, parsed)
        return UpstreamProtocolError(
            f"{provider}: answered with something other than {expected}", provider=provider
        )
    retry_after = classify.retry_after_seconds(response.headers.get("retry-after"))
    return classify.to_error(
        provider, classify.read_answer(response.status, answer, redact=redact), retry_after=retry_after
    )


def _check_completion(provider: str, answer: bytes, redact: Redactor) -> JSON:
    """A 200 whose body is not a chat completion is the provider's failure, not an answer.
    Returns the answer, parsed."""
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"{provider}: answered with invalid JSON", provider=provider) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("choices"), list):
        error = classify.read_answer(502, answer, redact=redact)
        if isinstance(parsed, dict) and "error" in parsed:
            raise classify.to_error(provider, error)
        raise UpstreamProtocolError(f"{provider}: answered without choices", provider=provider)
    return parsed
