"""What each API request leaves behind when it ends: its SPEC §7 metrics and one log line.

Called by the envelope (middleware.py) when a request to an API endpoint ends; it reads the
RequestContext the request filled in (endpoint, client, model, provider, attempts, tokens,
timings), never the bodies.
"""

from __future__ import annotations

import time

from . import logs, metrics
from .context import RequestContext

CLIENT_CLOSED = 499
"""The client left before any answer started (nginx's convention)."""


def finished(ctx: RequestContext, status: int) -> None:
    duration = (ctx.ended or time.perf_counter()) - ctx.started
    model, provider, endpoint = ctx.model or "", ctx.provider or "", ctx.endpoint or ""
    metrics.requests(ctx.client or "", model, provider, endpoint, str(status)).inc()
    metrics.duration(model, provider, endpoint).observe(duration)
    if ctx.overhead is not None:
        metrics.OVERHEAD.observe(ctx.overhead)
    if ctx.streamed and ctx.first_token is not None:
        metrics.ttft(model, provider, endpoint).observe(ctx.first_token)
    tokens = ctx.tokens
    logs.access(
        request_id=ctx.request_id,
        endpoint=endpoint,
        client=ctx.client,
        model=ctx.model,
        provider=ctx.provider,
        key=ctx.target.key.name if ctx.target is not None else None,
        status=status,
        attempts=ctx.attempts,
        prompt_tokens=tokens.prompt_tokens if tokens else None,
        completion_tokens=tokens.completion_tokens if tokens else None,
        cached_tokens=tokens.cached_tokens if tokens else None,
        reasoning_tokens=tokens.reasoning_tokens if tokens else None,
        duration_ms=round(duration * 1000, 3),
        ttft_ms=round(ctx.first_token * 1000, 3) if ctx.first_token is not None else None,
        outcome=ctx.outcome or ("completed" if status < 400 else "error"),
        settlement_key=ctx.settlement_key,
    )
