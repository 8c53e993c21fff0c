"""Operator endpoints, behind `admin.key`: the state of every provider key, drain, undrain.

GET  /admin/providers                  every provider and key: breaker state, in flight, TTFT
POST /admin/providers/{name}/drain     take a provider out of rotation
POST /admin/providers/{name}/undrain   put it back, and forgive keys marked broken or exhausted
GET  /admin/usage                      tokens and cost per client and per provider key: today,
                                       this month, all time, and what is left of each allowance
"""

from __future__ import annotations

import hashlib
import hmac

import orjson
from starlette.requests import Request

from .errors import InvalidApiKey, NotFound, RouterError, StateUnavailable
from .handlers import runtime
from .responses import BytesResponse
from .state import StateUnavailableError


class AdminDisabled(RouterError):
    status = 403
    code = "admin_disabled"


async def providers(request: Request) -> BytesResponse:
    rt = runtime(request)
    _authorize(request)
    rows = rt.health.report(rt.targets)
    body = [
        {"name": name, "drained": rt.health.drained(name), "keys": [r for r in rows if r["provider"] == name]}
        for name in rt.config.providers
    ]
    return BytesResponse(orjson.dumps({"providers": body}), headers=[])


async def usage(request: Request) -> BytesResponse:
    rt = runtime(request)
    _authorize(request)
    try:
        report = await rt.ledger.usage()
    except StateUnavailableError:
        raise StateUnavailable("Shared state is unavailable; usage cannot be read now.") from None
    return BytesResponse(orjson.dumps(report), headers=[])


async def drain(request: Request) -> BytesResponse:
    return _set_drained(request, drained=True)


async def undrain(request: Request) -> BytesResponse:
    return _set_drained(request, drained=False)


def _set_drained(request: Request, *, drained: bool) -> BytesResponse:
    rt = runtime(request)
    _authorize(request)
    name = request.path_params["name"]
    if name not in rt.config.providers:
        raise NotFound(f"No provider named '{name}'.")
    if drained:
        rt.health.drain(name)
    else:
        rt.health.undrain(name)
    return BytesResponse(orjson.dumps({"provider": name, "drained": drained}), headers=[])


def _authorize(request: Request) -> None:
    key = runtime(request).config.admin.key
    if key is None:
        raise AdminDisabled("The admin endpoints are off: set admin.key in providers.yaml.")
    scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
    # Compare digests so the comparison takes the same time whatever the lengths.
    expected = hashlib.sha256(key.encode()).digest()
    offered = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    if scheme.lower() != "bearer" or not hmac.compare_digest(expected, offered):
        raise InvalidApiKey("The admin endpoints need 'Authorization: Bearer <admin.key>'.")
