"""How a RouterError reads to an Anthropic client: `{"type": "error", "error": {"type", "message"}}`.

The status is what Anthropic documents for the same situation, so the Anthropic SDKs raise
the matching exception class and retry what they retry (408, 409, 429, 5xx, 529):

    router error (errors.py)            status  Anthropic `error.type`
    InvalidRequest, ParamNotAllowed     400     invalid_request_error
    InvalidApiKey                       401     authentication_error
    InsufficientQuota                   402     billing_error
    ModelNotAllowed                     403     permission_error
    NotFound, ModelNotFound             404     not_found_error
    RequestTimeout                      408     timeout_error
    RequestTooLarge                     413     request_too_large
    RateLimited                         429     rate_limit_error
    NoProviderAvailable                 529     overloaded_error  (Anthropic's "try again soon")
    TooManyConnections                  529     overloaded_error
    StateUnavailable                    503     api_error         (router's own state, not load)
    UpstreamTimeout, DeadlineExceeded   504     timeout_error
    UpstreamError (the rest)            502     api_error
    UpstreamStatusError                 its client status, by the rows above (a provider's
                                        400 stays 400, its rate limit 429, the rest 502)
    any other 4xx (405, 409, 422, 431)  same    invalid_request_error
    any other 5xx                       same    api_error

Anthropic errors have no `param`: where the message does not already name it, it is put in
front (`max_tokens: ...`), as Anthropic's own messages read. `request_id` (optional in the
SDK's ErrorResponse) is left to the caller, who knows it and sends it as a header too. The
error's `headers` (Retry-After) are the caller's to add: this module returns status and body.
"""

from __future__ import annotations

import orjson

from ...errors import NoProviderAvailable, RouterError, TooManyConnections

OVERLOADED = 529
"""Anthropic's status for "temporarily overloaded, retry": its SDKs raise OverloadedError."""

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    OVERLOADED: "overloaded_error",
}


def status_and_type(error: RouterError) -> tuple[int, str]:
    """The HTTP status and Anthropic error type for a router error (the table above)."""
    status = OVERLOADED if isinstance(error, NoProviderAvailable | TooManyConnections) else error.http_status
    kind = _TYPE_BY_STATUS.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return status, kind


def payload(error: RouterError) -> dict[str, object]:
    """The error object of a response body or of a stream's `error` event."""
    _, kind = status_and_type(error)
    message = error.message
    if error.param and error.param not in message:
        message = f"{error.param}: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def render(error: RouterError) -> tuple[int, bytes]:
    """An error answer: (status, body)."""
    status, _ = status_and_type(error)
    return status, orjson.dumps(payload(error))


def stream_event(error: RouterError) -> bytes:
    """The `error` event that ends a stream broken after its first bytes (status already sent)."""
    return b"event: error\ndata: " + orjson.dumps(payload(error)) + b"\n\n"
