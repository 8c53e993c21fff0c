"""Thin Starlette endpoints: read the request, call the pure pieces, return a response."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from . import capabilities, metrics
from .call import Call
from .context import SCOPE_KEY, RequestContext
from .errors import InvalidApiKey, InvalidRequest, MethodNotAllowed, ModelNotFound, NotFound, RouterError
from .exchange import Exchange, RouterResponse
from .ledger import idempotency_key
from .responses import BytesResponse
from .types import JSON
from .validate import validate

if TYPE_CHECKING:
    from .runtime import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


async def chat_completions_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /v1/chat/completions as a plain ASGI app (app.RouterApp sends it here directly)."""
    response = await chat_completions(Request(scope, receive))
    await response(scope, receive, send)


async def chat_completions(request: Request) -> RouterResponse:
    rt = runtime(request)
    rt.active += 1  # a reload retires this runtime only once no request still uses it
    try:
        return await _chat_completions(request, rt)
    finally:
        rt.active -= 1


async def _chat_completions(request: Request, rt: Runtime) -> RouterResponse:
    """Parse, authenticate, validate; then the request is its exchange's."""
    ctx: RequestContext = request.scope[SCOPE_KEY]
    client = rt.auth.authenticate(request.headers.get("authorization"))
    ctx.client = client.name if client else None
    raw = await request.body()
    body = _json_object(raw)
    validate(body)
    model = body["model"]
    rt.auth.check_model(client, model)
    targets = rt.config.targets.get(model)
    if targets is None:
        raise ModelNotFound(f"The model '{model}' does not exist or no provider serves it.", param="model")
    ctx.model = model  # configured: safe as a metric label
    targets = capabilities.serving(targets, body)  # a 400 naming the parameter if none can
    headers = dict(request.scope["headers"])
    call = Call.of(
        ctx.request_id, body, raw,
        client=client, targets=targets, headers=headers, idempotency=idempotency_key(headers),
    )  # fmt: skip
    ctx.streamed = call.stream
    exchange = Exchange(rt.ledger, rt.proxy, ctx, call, rt.config.routing.timeouts)
    return await exchange.run(request.receive)


async def list_models(request: Request) -> BytesResponse:
    rt = runtime(request)
    client = rt.auth.authenticate(request.headers.get("authorization"))
    return BytesResponse(rt.models_json(client), headers=[])


async def retrieve_model(request: Request) -> BytesResponse:
    """GET /v1/models/{id}: 404 model_not_found alike for a model this client may not use and
    one no provider serves (the list does not show it either)."""
    rt = runtime(request)
    client = rt.auth.authenticate(request.headers.get("authorization"))
    model: str = request.path_params["id"]
    body = rt.model_json(client, model)
    if body is None:
        raise ModelNotFound(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )
    return BytesResponse(body, headers=[])


async def healthz(request: Request) -> BytesResponse:
    return BytesResponse(b'{"status":"ok"}', headers=[])


async def readyz(request: Request) -> BytesResponse:
    rt = runtime(request)
    if getattr(request.app.state, "draining", False):
        return BytesResponse(b'{"status":"draining","reason":"shutting down"}', status=503, headers=[])
    reason = rt.unready_reason()
    if reason is None:
        if rt.ledger.state.degraded:  # SPEC §3: degraded, still ready (on_failure: local)
            return BytesResponse(
                b'{"status":"degraded","reason":"shared state unreachable: local limits"}', headers=[]
            )
        return BytesResponse(b'{"status":"ready"}', headers=[])
    return BytesResponse(orjson.dumps({"status": "unready", "reason": reason}), status=503, headers=[])


async def metrics_text(request: Request) -> BytesResponse:
    """GET /metrics, on the main port and on `server.metrics_port` alike. It names clients and
    what is left of their budgets, so with `metrics.key` set it needs that key."""
    key = runtime(request).config.metrics.key
    if key is not None and not _bearer_is(request.headers.get("authorization"), key):
        error = InvalidApiKey("GET /metrics needs 'Authorization: Bearer <metrics.key>'.")
        # Answered here, not raised: the metrics listener need not have the envelope.
        return BytesResponse(error.body(), status=error.status, headers=[(b"www-authenticate", b"Bearer")])
    body, content_type = metrics.exposition()
    return BytesResponse(body, headers=[], media_type=content_type.encode())


def _bearer_is(authorization: str | None, key: str) -> bool:
    """`authorization` is `Bearer <key>`, compared in constant time (digests: lengths too)."""
    scheme, _, given = (authorization or "").partition(" ")
    expected = hashlib.sha256(key.encode()).digest()
    offered = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(expected, offered) and scheme.lower() == "bearer"


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 / 405 in the OpenAI error shape."""
    assert isinstance(exc, HTTPException)
    error: RouterError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    elif exc.status_code == 404:
        error = NotFound(f"Unknown route: {request.method} {request.url.path}.")
    else:
        error = InvalidRequest(str(exc.detail))
    return Response(error.body(), status_code=exc.status_code, media_type="application/json")


def _json_object(raw: bytes) -> JSON:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be a JSON object."
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body
