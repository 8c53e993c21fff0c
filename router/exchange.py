"""One request, owned from admission through its attempts to settlement (SPEC §6, §8).

The handler hands over a Call; the exchange admits it, has the proxy attempt its targets,
and ends it one way: answered (a whole answer, or a stream once it ends), failed (the error
to answer with), or abandoned (the client left, or shutdown). Whichever way, it settles the
request once and writes the request's record (RequestContext) once, for the log line and
the metrics.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson

from .admission import admit
from .api import Answering
from .attempt import Committed, Tally
from .call import Call
from .classify import Verdict
from .config import Target, Timeouts
from .context import RequestContext
from .disconnect import DisconnectWatch
from .errors import RouterError, UpstreamStatusError
from .refusals import Replayed
from .responses import BytesResponse, StreamResponse
from .settlement import Settlement
from .state import Stored
from .types import Usage

if TYPE_CHECKING:
    from starlette.types import Receive

    from .ledger import Ledger, Settling
    from .outcome import Outcome
    from .proxy import Proxy

RouterResponse = BytesResponse | StreamResponse


class Exchange:
    def __init__(self, ledger: Ledger, proxy: Proxy, ctx: RequestContext, call: Call, timeouts: Timeouts):
        self._ledger = ledger
        self._proxy = proxy
        self._ctx = ctx
        self._call = call
        self._idle = timeouts.idle
        self._deadline = asyncio.get_running_loop().time() + timeouts.total
        self._admission = admit(ledger, call)
        self._settlement = Settlement(ledger, self._admission, request_id=ctx.request_id, started=ctx.started)
        self._tally = Tally()
        self._admission.relayed_so_far = self._relayed
        self._outcome: Outcome | None = None

    def _relayed(self) -> int:
        """Answer events relayed so far (router's count of completion tokens), for a renewal."""
        reading = self._tally.reading
        return reading.answer_events if reading is not None else -1

    async def run(self, receive: Receive) -> RouterResponse:
        call = self._call
        # A client that leaves stops its provider request — unless it sent an idempotency key:
        # then the answer is finished and kept, so its retry is replayed rather than re-run.
        watch = DisconnectWatch(receive) if call.idempotency is None else None
        work = self._proxy.forward(
            call, self._admission, self._tally, self._deadline, hedge_lost=self._hedge_lost
        )
        try:
            outcome = await (watch.guard(work) if watch is not None else work)
        except Replayed as replayed:  # the stored answer of an earlier request with this idempotency key
            self._ctx.outcome, self._ctx.settlement_key = "replayed", replayed.settlement_key
            return replayed.response
        except RouterError as error:
            self._record()
            await self._failed(error)
            raise
        except BaseException:  # the client left, or shutdown
            self._record()
            self._abandoned()
            raise
        self._outcome = outcome
        self._record()
        answer = outcome.answer
        if isinstance(answer, Committed):
            return StreamResponse(
                upstream=answer.upstream,
                relay=answer.relay,
                first=answer.first,
                headers=self._ctx.response_headers(),
                deadline=self._deadline,
                idle=self._idle,
                ending=self,
                watch=watch,
                keep=call.idempotency is not None,
                translation=call.endpoint.stream(self._answering()) if call.endpoint.stream else None,
            )
        if watch is not None:
            watch.stop()
        if answer.failure is not None:  # a gathered stream that broke past its commit point
            failure = answer.failure
            await self._settle(failure.http_status, "error", answer.usage, answer.estimated).done()
            raise failure
        body = answer.body
        if call.endpoint.answer is not None:  # the client's API shape, from the OpenAI answer
            try:
                parsed = answer.parsed if answer.parsed is not None else orjson.loads(body)
                body = orjson.dumps(call.endpoint.answer(parsed, self._answering(answer.usage)))
            except Exception as failure:  # served, but not an answer the client's API can carry
                status = failure.http_status if isinstance(failure, RouterError) else 500
                await self._settle(status, "error", answer.usage, answer.estimated).done()
                raise
        return await self._answered(body, answer.usage, answer.estimated)

    # -- the ways a request ends ---------------------------------------------------------

    async def _answered(self, body: bytes, usage: Usage, estimated: bool) -> BytesResponse:
        """A whole answer, about to be sent. With an idempotency key it is stored first, so a
        retry that follows the answer finds it; without one, the answer need not wait for
        the settlement's reply (Settling.written)."""
        response = BytesResponse(body, headers=self._ctx.response_headers())
        stored = self._settlement.stored(200, stream=False, body=body)
        settling = self._settle(200, "completed", usage, estimated, stored)
        if stored is not None:
            await settling.done()
        else:
            await settling.written()
            response.after = settling.rest()
        return response

    async def _failed(self, error: RouterError) -> None:
        """The request ends with `error`. A final answer that is the client's fault (a 400 from
        the provider) is kept for replay; one that a retry may fix is not (SPEC §8)."""
        keep = isinstance(error, UpstreamStatusError) and error.verdict == Verdict.CLIENT_FAULT
        stored = None
        if keep:
            status, body = self._call.endpoint.error(error)  # as the client reads it, replayed too
            stored = self._settlement.stored(status, stream=False, body=body)
        await self._settle(error.http_status, "error", None, True, stored).done()

    def _abandoned(self) -> None:
        """The client left (or the server is stopping) before an answer: settled in the
        background for what the attempt read so far (at least the prompt)."""
        self._ctx.outcome = "client_disconnected"
        relay = self._tally.reading
        used = relay.usage if relay is not None else None
        estimate = relay.estimate() if relay is not None else Usage(self._admission.reserve.prompt_tokens, 0)
        self._settle(499, "client_disconnected", used or estimate, used is None).detach()

    async def ended(self, response: StreamResponse) -> None:
        """StreamEnding: a committed stream ended, before its last bytes go out."""
        await self._stream_settled(response).done()

    def left(self, response: StreamResponse) -> None:
        """StreamEnding: the client left a committed stream, or its task was cancelled."""
        self._stream_settled(response).detach()

    def _stream_settled(self, response: StreamResponse) -> Settling:
        assert self._outcome is not None
        self._outcome.stream_ended(response.outcome, response.failure)
        relay = response.relay
        stored = None
        if response.outcome == "completed" and response.sent is not None:
            stored = self._settlement.stored(200, stream=True, body=b"".join(response.sent))
        # Where the provider reported no usage, what the client's usage chunk said.
        used = relay.usage or relay.estimate()
        # "pending": the stream's task was cancelled (shutdown) before it could say how it ended.
        outcome = response.outcome if response.outcome != "pending" else "client_disconnected"
        return self._settle(200, outcome, used, relay.usage is None, stored)

    def _answering(self, usage: Usage | None = None) -> Answering:
        call = self._call
        return Answering(
            request=call.original if call.original is not None else call.body,
            answer_id=self._admission.settlement_key.partition("_")[2],
            created=int(time.time()),
            usage=usage,
        )

    def _hedge_lost(self, target: Target, used: Usage) -> None:
        """An attempt a hedge race cancelled: settled now, on its own, as a hedge."""
        self._ledger.finish(self._settlement.hedge_lost(target, used).work).detach()

    # -- the request's record, and its settlement ----------------------------------------

    def _record(self) -> None:
        """What the attempts did, for the response's headers and the request's log line."""
        ctx, tally = self._ctx, self._tally
        ctx.attempts = tally.attempts
        ctx.target = tally.target
        ctx.provider = tally.target.provider.name if tally.target is not None else None
        ctx.upstream_wait = tally.upstream_wait
        ctx.upstream_headers = tally.upstream_headers
        ctx.first_token = tally.first_token
        if tally.attempts:
            ctx.settlement_key = self._admission.settlement_key
        ctx.headers += self._admission.headers

    def _settle(
        self, status: int, outcome: str, usage: Usage | None, estimated: bool, stored: Stored | None = None
    ) -> Settling:
        settled = self._settlement.close(
            target=self._tally.target if self._tally.attempts else None,
            status=status,
            outcome=outcome,
            usage=None if estimated else usage,
            estimated=usage if estimated else None,
            stored=stored,
        )
        if settled.used is not None:
            self._ctx.tokens, self._ctx.outcome = settled.used, outcome
        return self._ledger.finish(settled.work)
