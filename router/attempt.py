"""One attempt at one target: send the request, and read it to an answer the client can be given.

An attempt is all-or-nothing up to its commit point, the first content of the answer: it
either returns what can be sent (a whole answer, or a stream whose first content is in
hand), or raises an UpstreamError that says whether another attempt may help. It never
sends the client anything itself, so the caller can always try elsewhere.

A request the client did not ask to stream is still read as a stream where the provider
streams (providers.yaml `streaming`), and the events are gathered into one answer: a
provider that takes the request and then says nothing is left after `first_token`, not
after the whole deadline. Past the commit point the attempt's end is the request's, as
for a stream: a failure then is returned with what was read, not retried.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from . import classify, envelope, sse
from .aggregate import CompletionAggregate
from .call import Call
from .config import Config, Target
from .errors import DeadlineExceeded, UpstreamError, UpstreamProtocolError, UpstreamTimeout
from .redact import Redactor, is_credential_header
from .relay import StreamRelay
from .responses import FINISH_GRACE, report_dropped
from .types import JSON, RawHeaders, Usage
from .upstream import Upstream, UpstreamResponse, base_headers
from .watchdog import Watchdog

_HEADER_VALUE = re.compile(rb"^[\x20-\x7e]{1,1024}\Z")


@dataclass(slots=True)
class Tally:
    """What a request's attempts have done so far. Its exchange owns it and reads it however
    the request ends; each attempt adds to it as it goes."""

    attempts: int = 0
    """Upstream requests actually sent (SPEC §8: not skipped targets, not waits)."""
    target: Target | None = None
    """The target of the last attempt (the answering one, once there is an answer)."""
    upstream_wait: float = 0.0
    """Seconds spent waiting on providers (attempts, backoffs, Retry-After) before the answer started."""
    upstream_headers: float | None = None
    """The last attempt's time to its response headers, in seconds."""
    first_token: float | None = None
    """The last attempt's time to its first content (or its whole answer), in seconds."""
    reading: StreamRelay | None = None
    """The stream the last attempt read: what it used so far, should the client leave."""
    committed: asyncio.Future[None] | None = None
    """Set once the attempt has its first token (or its whole answer): a hedge race waits on it."""

    def commit(self) -> None:
        if self.committed is not None and not self.committed.done():
            self.committed.set_result(None)


@dataclass(frozen=True, slots=True)
class Whole:
    """A whole answer: the provider's, or gathered from its stream."""

    body: bytes
    usage: Usage
    """The provider's usage, or router's estimate where it reported none (`estimated`)."""
    estimated: bool
    failure: UpstreamError | None = None
    """A gathered stream that broke past its commit point: the request's answer is this
    error, and `usage` is what was read before it."""
    parsed: JSON | None = None
    """`body` as router read it, where it did: an endpoint that translates it need not parse it again."""


@dataclass(frozen=True, slots=True)
class Committed:
    """A stream past its commit point: the rest is the stream response's to relay."""

    upstream: UpstreamResponse
    relay: StreamRelay
    first: bytes
    """The events held back until the commit point, for the client."""


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
        call: Call,
        target: Target,
        upstream_body: JSON,
        deadline: float,
        tally: Tally,
        *,
        request_id: str,
        answer_id: str,
        prompt_tokens: int,
    ) -> Whole | Committed:
        """One attempt. `upstream_body` is `call` translated for `target` (translate.for_target:
        a stream where its provider streams); `prompt_tokens` is router's estimate of the
        prompt, for answers that report no usage."""
        as_stream = bool(upstream_body.get("stream"))  # translate.for_target decided it
        headers, redact = self._headers(
            request_id, target, call.headers, stream=as_stream, own_key=call.endpoint.api_key_header
        )
        tally.target = target
        tally.attempts += 1
        tally.reading = None
        if not as_stream:
            payload = orjson.dumps(upstream_body)
            return await self._complete(
                call, tally, target, payload, headers, deadline, answer_id, prompt_tokens, redact
            )
        relay = StreamRelay(
            provider=target.provider.name,
            # A gathered answer always has usage: the provider's, else router's estimate.
            wants_usage=call.wants_usage or not call.stream,
            expects_usage=target.provider.stream_usage,
            choices=call.choices,
            upstream_model=target.route.upstream,
            answer_id=answer_id,
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
            keep_chunk_usage=call.wants_chunk_usage,
            redact=redact,
        )
        tally.reading = relay
        payload = orjson.dumps(upstream_body)
        upstream, first = await self._open_stream(tally, target, payload, headers, deadline, relay)
        if call.stream:
            return Committed(upstream, relay, first)
        return await self._gather(tally, upstream, relay, first, deadline)

    def _headers(
        self,
        request_id: str,
        target: Target,
        client_headers: Mapping[bytes, bytes],
        *,
        stream: bool,
        own_key: bytes | None = None,
    ) -> tuple[RawHeaders, Redactor]:
        """What to send, and what to take out of the provider's text: every provider key, and
        the value of any credential the client had forwarded (such configs only). `own_key`: a
        header that carries the router client key on this endpoint (x-api-key on /v1/messages),
        never forwarded there whatever `forward_headers` says."""
        headers = [*self._base_headers[target, stream], (b"x-request-id", request_id.encode())]
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
                and name != own_key
                and _HEADER_VALUE.match(value)
            ):
                headers.append((name, value))
                if name in credentials:
                    if sent is None:
                        sent = []
                    sent.append(value.decode("ascii"))
        return headers, self._redact.plus(sent) if sent else self._redact

    # -- a whole answer, from a provider that does not stream -----------------------

    async def _complete(
        self,
        call: Call,
        tally: Tally,
        target: Target,
        payload: bytes,
        headers: RawHeaders,
        deadline: float,
        answer_id: str,
        prompt_tokens: int,
        redact: Redactor,
    ) -> Whole:
        provider = target.provider.name
        loop = asyncio.get_running_loop()
        started = time.perf_counter()  # timings; loop.time() (ms resolution under uvloop) is for deadlines
        response: UpstreamResponse | None = None
        try:
            # A non-streaming answer arrives whole, so its wait is the generation time:
            # bounded by `response`, not by `first_token`.
            async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.response)) as timer:
                response = await self._upstream.send(
                    target, payload, headers, endpoint=call.endpoint.upstream_path
                )
                tally.upstream_headers = tally.first_token = time.perf_counter() - started
                timer.reschedule(min(deadline, loop.time() + self._timeouts.idle))  # one timer, not two
                answer = await response.read()
        except TimeoutError:
            raise self._timeout(
                provider, loop.time(), deadline, headers_arrived=response is not None
            ) from None
        finally:
            tally.upstream_wait += time.perf_counter() - started
            if response is not None:
                response.close()
        if response.status != 200:
            raise _status_error(provider, response, answer, redact)
        kind = target.route.kind
        parsed = _check_answer(provider, answer, redact, kind)
        endpoint = call.endpoint
        if endpoint.fault is not None:
            fault = endpoint.fault(parsed, call.body)
            if fault is not None:
                raise UpstreamProtocolError(f"{provider}: {fault}", provider=provider)
        tally.commit()  # a whole answer is its own commit point
        if endpoint.usage is not None:  # embeddings, rerank: the prompt is all they use
            used = endpoint.usage(parsed)
            return Whole(answer, used or Usage(prompt_tokens, 0), estimated=used is None, parsed=parsed)
        usage = Usage.from_json(parsed.get("usage"))
        if envelope.complete(
            parsed,
            answer_id=answer_id,
            model=target.route.upstream,
            created=int(time.time()),
            prompt_tokens=prompt_tokens,
        ):
            answer = orjson.dumps(parsed)
        if usage is not None:
            return Whole(answer, usage, estimated=False, parsed=parsed)
        # The estimate the answer now carries is what gets settled.
        estimate = Usage.from_json(parsed["usage"]) or Usage(prompt_tokens, 0)
        return Whole(answer, estimate, estimated=True, parsed=parsed)

    # -- streams ---------------------------------------------------------------------

    async def _open_stream(
        self,
        tally: Tally,
        target: Target,
        payload: bytes,
        headers: RawHeaders,
        deadline: float,
        relay: StreamRelay,
    ) -> tuple[UpstreamResponse, bytes]:
        """Send the request and read up to the commit point."""
        provider = target.provider.name
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        first_token_by = min(deadline, loop.time() + self._timeouts.first_token)
        response: UpstreamResponse | None = None
        committed = False
        try:
            async with asyncio.timeout_at(first_token_by):
                response = await self._upstream.send(target, payload, headers)
            tally.upstream_headers = time.perf_counter() - started
            if response.status != 200:
                async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.idle)):
                    raise _status_error(provider, response, await response.read(), relay.redact)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                async with asyncio.timeout_at(min(deadline, loop.time() + self._timeouts.idle)):
                    answer = await response.read()
                raise _status_error(provider, response, answer, relay.redact, expected="an event stream")
            first = await self._until_commit(relay, response, first_token_by)
            tally.first_token = time.perf_counter() - started
            tally.commit()
            committed = True
        except TimeoutError:
            raise self._timeout(
                provider, loop.time(), deadline, headers_arrived=response is not None, first_token=True
            ) from None
        finally:
            tally.upstream_wait += time.perf_counter() - started
            if response is not None and not committed:
                response.close()
                report_dropped(relay)
        return response, first

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

    async def _gather(
        self, tally: Tally, response: UpstreamResponse, relay: StreamRelay, first: bytes, deadline: float
    ) -> Whole:
        """Read a committed stream to its end and gather it into one answer. The relay makes
        each event whole (envelope, usage), so the aggregate is built from its output. The
        body is poured into the relay as it arrives, so its events cost no task switch each;
        the idle timer is fed by every piece that is not garbage."""
        started = time.perf_counter()
        aggregate = CompletionAggregate()
        _gather_events(aggregate, sse.EventSplitter().feed(first))
        failure: UpstreamError | None = None
        try:
            with Watchdog(idle=self._timeouts.idle, deadline=deadline) as watch:

                def into(data: bytes) -> bool:
                    out = relay.feed_events(data)
                    if not relay.only_dropped:
                        watch.fed()
                    if out:
                        _gather_events(aggregate, out)
                    if relay.finished and not relay.usage_pending:
                        watch.wait_at_most(FINISH_GRACE)  # only [DONE] is left to come
                    return relay.done or relay.failure is not None

                if not relay.done and relay.failure is None:
                    await response.pour(into)
            if relay.failure is None and not relay.done:
                _gather_events(aggregate, relay.end_events())  # raises if the answer is cut
            failure = relay.failure
        except TimeoutError:
            if relay.finished and relay.failure is None:  # whole, but [DONE] never came
                _gather_events(aggregate, relay.end_events())
            else:
                failure = self._timeout(
                    relay.provider, asyncio.get_running_loop().time(), deadline, headers_arrived=True
                )
        except UpstreamError as error:
            failure = error
        finally:
            tally.upstream_wait += time.perf_counter() - started
            if relay.done and failure is None:
                response.release()
            else:
                response.close()
            report_dropped(relay)
        used = relay.usage
        if failure is not None:
            return Whole(b"", used or relay.estimate(), estimated=used is None, failure=failure)
        result = aggregate.result()
        return Whole(orjson.dumps(result), used or relay.estimate(), estimated=used is None, parsed=result)

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


def _gather_events(aggregate: CompletionAggregate, events: list[bytes]) -> None:
    for event in events:
        data = sse.data_of(event)
        if data is not None:
            aggregate.feed_event(data)  # skips [DONE], and what is not a JSON object


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


_ANSWER_LIST = {"chat": "choices", "embedding": "data", "rerank": "results"}
"""What a 200 answer must carry, by the model's kind, to be an answer at all."""


def _check_answer(provider: str, answer: bytes, redact: Redactor, kind: str) -> JSON:
    """A 200 whose body is not an answer of its kind (a chat completion, embeddings, rerank
    results) is the provider's failure, not an answer. Returns the answer, parsed."""
    try:
        parsed = orjson.loads(answer)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(f"{provider}: answered with invalid JSON", provider=provider) from None
    field = _ANSWER_LIST[kind]
    if not isinstance(parsed, dict) or not isinstance(parsed.get(field), list):
        error = classify.read_answer(502, answer, redact=redact)
        if isinstance(parsed, dict) and "error" in parsed:
            raise classify.to_error(provider, error)
        raise UpstreamProtocolError(f"{provider}: answered without {field}", provider=provider)
    return parsed
