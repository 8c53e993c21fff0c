"""Every error router returns, each able to render itself in the OpenAI error shape.

    RouterError                      500 api_error
    ├── InvalidRequest               400 invalid_request_error
    │   └── ParamNotAllowed          400 (a value a provider's model does not take)
    ├── InvalidApiKey                401 invalid_api_key
    ├── InsufficientQuota            402 insufficient_quota (the client's budget is spent)
    ├── ModelNotAllowed              403 model_not_allowed
    ├── NotFound                     404 not_found
    │   └── ModelNotFound            404 model_not_found
    ├── MethodNotAllowed             405 method_not_allowed
    ├── IdempotencyConflict          409 idempotency_conflict (the same key is still running)
    ├── RequestTimeout               408 request_timeout (the client was too slow to send it)
    ├── RequestTooLarge              413 request_too_large
    ├── IdempotencyKeyReused         422 idempotency_key_reused (same key, different body)
    ├── RateLimited                  429 rate_limit_exceeded (a client limit)
    ├── HeadersTooLarge              431 request_header_fields_too_large
    ├── NoProviderAvailable          503 no_provider_available
    ├── StateUnavailable             503 state_unavailable (shared state down; exactly-once needs it)
    ├── TooManyConnections           503 too_many_connections (server.max_connections)
    └── UpstreamError                502 upstream_error: an attempt at a provider failed
        ├── UpstreamConnectError     could not connect
        ├── UpstreamConnectionLost   reset or closed mid-answer
        ├── UpstreamProtocolError    answered something that is not a valid answer
        ├── UpstreamTimeout          504 upstream_timeout
        │   └── DeadlineExceeded     the request's total deadline, not the provider's fault
        └── UpstreamStatusError      answered with an error (HTTP, or an event in a stream);
                                     rendered by its verdict
                                     (client's fault: the provider's status and message;
                                     rate limited: 429; anything else: 502)

Upstream errors carry `retryable` for the attempt loop: whether another attempt may help.
"""

from __future__ import annotations

from typing import ClassVar

import orjson

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def error_type(status: int) -> str:
    """The OpenAI `type` category for a status (SPEC §3)."""
    return _TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


class RouterError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = headers or {}

    @property
    def http_status(self) -> int:
        return self.status

    @property
    def error_code(self) -> str:
        return self.code

    def payload(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": error_type(self.http_status),
                "param": self.param,
                "code": self.error_code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


class InvalidRequest(RouterError):
    status = 400
    code = "invalid_request_error"


class ParamNotAllowed(InvalidRequest):
    """A parameter value the chosen provider's model does not take (providers.yaml `allowed`)."""


class InvalidApiKey(RouterError):
    status = 401
    code = "invalid_api_key"


class ModelNotAllowed(RouterError):
    status = 403
    code = "model_not_allowed"


class NotFound(RouterError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class MethodNotAllowed(RouterError):
    status = 405
    code = "method_not_allowed"


class RequestTooLarge(RouterError):
    status = 413
    code = "request_too_large"


class RequestTimeout(RouterError):
    status = 408
    code = "request_timeout"


class HeadersTooLarge(RouterError):
    status = 431
    code = "request_header_fields_too_large"


class TooManyConnections(RouterError):
    status = 503
    code = "too_many_connections"


class InsufficientQuota(RouterError):
    status = 402
    code = "insufficient_quota"


class IdempotencyConflict(RouterError):
    status = 409
    code = "idempotency_conflict"


class IdempotencyKeyReused(RouterError):
    status = 422
    code = "idempotency_key_reused"


class RateLimited(RouterError):
    status = 429
    code = "rate_limit_exceeded"


class StateUnavailable(RouterError):
    status = 503
    code = "state_unavailable"


class NoProviderAvailable(RouterError):
    status = 503
    code = "no_provider_available"


class UpstreamError(RouterError):
    status = 502
    code = "upstream_error"
    retryable: bool = True

    def __init__(self, message: str, *, provider: str | None = None, **kwargs: object):
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.provider = provider


class UpstreamConnectError(UpstreamError):
    pass


class UpstreamConnectionLost(UpstreamError):
    pass


class UpstreamProtocolError(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"


class DeadlineExceeded(UpstreamTimeout):
    """The request's own total deadline ran out: says nothing about the provider."""


class UpstreamStatusError(UpstreamError):
    """A provider answered with an HTTP error. Its rendering depends on what the answer means.

    `client_status` is the status the client sees: the provider's own for the client's
    faults (passed through with the provider's message), 429 for rate limits, else 502.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        client_status: int,
        client_code: str,
        retryable: bool,
        verdict: str,
        retry_after: float | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message, provider=provider, param=param, headers=headers)
        self._client_status = client_status
        self._client_code = client_code
        self.retryable = retryable
        self.verdict = verdict
        """What the answer means (classify.Verdict): drives health and retries."""
        self.retry_after = retry_after

    @property
    def http_status(self) -> int:
        return self._client_status

    @property
    def error_code(self) -> str:
        return self._client_code
