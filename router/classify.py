"""Pure: what a provider's error answer means, from a table.

chenyu, real200 and trinity are themselves gateways (one-api / new-api style), so the
same status can mean different things: a 503 "无可用渠道" (no available channel) means
this provider does not serve the model, not that it is down. The first rule that
matches decides; a rule matches when its status (if any) matches and, if it names
codes or message fragments, one of them is present.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from .errors import UpstreamStatusError
from .redact import NOTHING, Redactor

MAX_RETRY_AFTER = 86400.0


class Verdict(StrEnum):
    CLIENT_FAULT = "client_fault"  # the request itself is wrong: passed through, never retried
    RATE_LIMITED = "rate_limited"  # this key is over a limit: cool down, try elsewhere
    QUOTA_EXHAUSTED = "quota_exhausted"  # this key's account is out of money or quota
    KEY_REJECTED = "key_rejected"  # our key is wrong: an ops problem, not the client's
    NOT_SERVED = "not_served"  # this provider does not serve the model (now)
    SERVER_ERROR = "server_error"  # the provider failed: retry elsewhere


@dataclass(frozen=True, slots=True)
class Rule:
    verdict: Verdict
    statuses: frozenset[int] = frozenset()
    codes: frozenset[str] = frozenset()
    fragments: tuple[str, ...] = ()


RULES: tuple[Rule, ...] = (
    Rule(
        Verdict.NOT_SERVED,
        codes=frozenset({"model_not_found", "model_not_available"}),
        fragments=("无可用渠道", "no available channel", "model_not_found"),
    ),
    Rule(Verdict.RATE_LIMITED, statuses=frozenset({429})),
    Rule(Verdict.RATE_LIMITED, fragments=("负载已饱和", "rate limit")),
    Rule(Verdict.QUOTA_EXHAUSTED, statuses=frozenset({402})),
    Rule(
        Verdict.QUOTA_EXHAUSTED,
        codes=frozenset({"insufficient_quota", "insufficient_user_quota"}),
        fragments=("额度不足", "余额不足"),
    ),
    Rule(
        Verdict.KEY_REJECTED,
        statuses=frozenset({401, 403}),
        codes=frozenset({"invalid_api_key", "invalid_key", "unauthorized", "forbidden"}),
    ),
    Rule(
        Verdict.CLIENT_FAULT,
        codes=frozenset(
            {
                "context_length_exceeded",
                "content_filter",
                "content_policy_violation",
                "sensitive_words_detected",
            }
        ),
    ),
    Rule(Verdict.KEY_REJECTED, statuses=frozenset({401, 403})),
    Rule(Verdict.CLIENT_FAULT, statuses=frozenset({400, 413, 422})),
    Rule(Verdict.NOT_SERVED, statuses=frozenset({404})),
)


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """The parts of a provider's error answer that matter, whatever shape it came in."""

    status: int
    message: str
    code: str | None = None
    param: str | None = None


def read_answer(status: int, body: bytes, *, redact: Redactor = NOTHING) -> ProviderAnswer:
    """Parse `{"error": {...}}`, `{"error": "..."}`, `{"message": ...}` or plain text.

    The one place a provider's words become router's text: every string kept passes
    `redact` (router's credentials out, redact.py), so no client answer, stored answer or
    log line built from it can carry a key. Router's callers always pass theirs."""
    try:
        payload: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, str):
            return ProviderAnswer(status, redact(error))
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or payload.get("message") or ""
            code = error.get("code") or error.get("type")
            param = error.get("param")
            return ProviderAnswer(
                status,
                redact(str(message)),
                code=redact(str(code)) if code not in (None, "") else None,
                param=redact(param) if isinstance(param, str) and param else None,
            )
    text = body.decode("utf-8", "replace").strip()
    # Redacted before it is cut: a key across the cut must not leave its first part.
    return ProviderAnswer(status, redact(text)[:300] if text and not text.startswith("<") else "")


def classify(answer: ProviderAnswer) -> Verdict:
    for rule in RULES:
        if rule.statuses and answer.status not in rule.statuses:
            continue
        named = rule.codes or rule.fragments
        if named and answer.code not in rule.codes and not any(f in answer.message for f in rule.fragments):
            continue
        return rule.verdict
    return Verdict.SERVER_ERROR


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # inf, nan or a year would break arithmetic or hold a key forever: cap at a day.
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when - (time.time() if now is None else now)), MAX_RETRY_AFTER)


def to_error(
    provider: str, answer: ProviderAnswer, *, retry_after: float | None = None
) -> UpstreamStatusError:
    """The error an attempt ends with, rendered as the client should see it if it is the last."""
    verdict = classify(answer)
    message = answer.message or f"HTTP {answer.status}"
    if verdict is Verdict.CLIENT_FAULT:
        status = answer.status if 400 <= answer.status < 500 else 400
        return UpstreamStatusError(
            message,
            provider=provider,
            client_status=status,
            client_code=answer.code or "invalid_request_error",
            retryable=False,
            param=answer.param,
            verdict=verdict,
        )
    if verdict is Verdict.RATE_LIMITED:
        headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else {}
        return UpstreamStatusError(
            f"{provider}: {message}",
            provider=provider,
            client_status=429,
            client_code="rate_limit_exceeded",
            retryable=True,
            headers=headers,
            verdict=verdict,
            retry_after=retry_after,
        )
    if verdict is Verdict.KEY_REJECTED:
        # The provider's text may quote part of our key; it never reaches the client.
        message = f"the provider rejected the router's credentials (HTTP {answer.status})"
    return UpstreamStatusError(
        f"{provider}: {message}",
        provider=provider,
        client_status=502,
        client_code="upstream_error",
        retryable=True,
        verdict=verdict,
    )
