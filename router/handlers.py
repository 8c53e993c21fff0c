"""Thin Starlette endpoints: read the request, call the pure pieces, return a response."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from . import capabilities, metrics
from .api import ENDPOINTS, ERROR_SHAPES, Endpoint, anthropic_messages
from .call import Call
from .config import Client, Target
from .context import SCOPE_KEY, RequestContext
from .errors import InvalidApiKey, InvalidRequest, MethodNotAllowed, ModelNotFound, NotFound, RouterError
from .exchange import Exchange, RouterResponse
from .ledger import idempotency_key
from .responses import BytesResponse
from .types import JSON

if TYPE_CHECKING:
    from .runtime import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime  # type: ignore[no-any-return]


def endpoint_app(endpoint: Endpoint) -> ASGIApp:
    """An API endpoint as a plain ASGI app (app.RouterApp sends its paths here directly)."""

    async def endpoint_asgi(scope: Scope, receive: Receive, send: Send) -> None:
        response = await serve(Request(scope, receive), endpoint)
        await response(scope, receive, send)

    return endpoint_asgi


def endpoint_handler(endpoint: Endpoint) -> Callable[[Request], Awaitable[RouterResponse]]:
    """The same, as a Starlette request handler (its route answers the other methods)."""

    async def handler(request: Request) -> RouterResponse:
        return await serve(request, endpoint)

    return handler


async def serve(request: Request, endpoint: Endpoint) -> RouterResponse:
    rt = runtime(request)
    rt.active += 1  # a reload retires this runtime only once no request still uses it
    try:
        return await _serve(request, rt, endpoint)
    finally:
        rt.active -= 1


async def _serve(request: Request, rt: Runtime, endpoint: Endpoint) -> RouterResponse:
    """Parse, authenticate, translate into the OpenAI request and check it can be served;
    then the request is its exchange's."""
    ctx: RequestContext = request.scope[SCOPE_KEY]
    client = rt.auth.authenticate(_authorization(request, endpoint))
    ctx.client = client.name if client else None
    raw = await request.body()
    original = _json_object(raw)
    body = endpoint.request(original)
    model: str = body["model"]
    targets = _targets(rt, client, model, endpoint.kind)
    ctx.model = model  # configured: safe as a metric label
    if endpoint.kind == "chat":
        targets = capabilities.serving(targets, body)  # a 400 naming the parameter if none can
    headers = dict(request.scope["headers"])
    call = Call.of(
        ctx.request_id, body, raw,
        client=client, targets=targets, headers=headers, idempotency=idempotency_key(headers),
        endpoint=endpoint, original=original if body is not original else None,
    )  # fmt: skip
    ctx.streamed = call.stream
    exchange = Exchange(rt.ledger, rt.proxy, ctx, call, rt.config.routing.timeouts)
    return await exchange.run(request.receive)


async def count_tokens(request: Request) -> BytesResponse:
    """POST /v1/messages/count_tokens: router's own estimate of the prompt (no provider is
    asked, nothing is settled), for a model this client may use."""
    rt = runtime(request)
    endpoint = ENDPOINTS["messages"]
    client = rt.auth.authenticate(_authorization(request, endpoint))
    raw = await request.body()
    body = _json_object(raw)
    counted = anthropic_messages.count_tokens(body, len(raw))
    _targets(rt, client, body["model"], endpoint.kind)
    return BytesResponse(orjson.dumps(counted), headers=[])


def _authorization(request: Request, endpoint: Endpoint) -> str | None:
    """`Authorization`, or the endpoint's own key header (Anthropic's x-api-key) as a bearer."""
    authorization = request.headers.get("authorization")
    if authorization is None and endpoint.api_key_header is not None:
        key = request.headers.get(endpoint.api_key_header.decode())
        if key is not None:
            return "Bearer " + key
    return authorization


def _targets(rt: Runtime, client: Client | None, model: str, kind: str) -> tuple[Target, ...]:
    """Where `model` is served, if this client may use it and it is of the endpoint's kind."""
    rt.auth.check_model(client, model)
    targets = rt.config.targets.get(model)
    if targets is None:
        raise ModelNotFound(f"The model '{model}' does not exist or no provider serves it.", param="model")
    served = targets[0].route.kind  # one kind per model name (config/providers.py)
    if served != kind:
        raise InvalidRequest(
            f"'{model}' is {_A_KIND[served]}, not {_A_KIND[kind]}: use {_USE[served]}.",
            param="model",
        )
    return targets


_A_KIND = {"chat": "a chat model", "embedding": "an embedding model", "rerank": "a rerank model"}
_USE = {
    "chat": "/v1/chat/completions, /v1/responses or /v1/messages",
    "embedding": "/v1/embeddings",
    "rerank": "/v1/rerank",
}


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
    """Starlette's own 404 / 405 in the error shape of the path's API."""
    assert isinstance(exc, HTTPException)
    error: RouterError
    if exc.status_code == 405:
        error = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    elif exc.status_code == 404:
        error = NotFound(f"Unknown route: {request.method} {request.url.path}.")
    else:
        error = InvalidRequest(str(exc.detail))
    shape = ERROR_SHAPES.get(request.url.path)  # Anthropic's on its paths
    body = shape(error)[1] if shape is not None else error.body()
    return Response(body, status_code=exc.status_code, media_type="application/json")


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
