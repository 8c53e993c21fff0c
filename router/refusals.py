"""What a client is told when its own scope refuses a request (SPEC §6, §8): the replay of a
finished answer, or the error for a limit, a spent budget, an idempotency conflict or reuse,
or shared state that cannot promise exactly-once.
"""

from __future__ import annotations

import math

from . import limits, metrics
from .config import Client
from .errors import IdempotencyConflict, IdempotencyKeyReused, StateUnavailable
from .responses import SSE_HEADERS, BytesResponse
from .state import Answer, Conflict, Limited, Replay, Reused, Spent, StateUnavailableError, Stored

STATE_RETRY = "2"
"""Retry-After while shared state is unavailable."""


class Replayed(Exception):
    """The idempotency key holds a finished answer: `response` replays it, with no upstream
    call and no new record (SPEC §6). Raised where the client's scope is first asked (the
    first attempt); the exchange returns the response."""

    def __init__(self, response: BytesResponse, settlement_key: str):
        super().__init__("replayed")
        self.response = response
        self.settlement_key = settlement_key
        """The key of the settlement whose answer this is."""


def refused(answer: Answer | StateUnavailableError, client: Client | None) -> Exception:
    """What the client is told when its scope refuses the request."""
    if isinstance(answer, StateUnavailableError):
        return StateUnavailable(
            "Shared state is unavailable, so this request cannot be settled exactly once; retry shortly.",
            headers={"retry-after": STATE_RETRY},
        )
    if isinstance(answer, Replay):
        metrics.REPLAYS.inc()
        return Replayed(replay(answer.stored), answer.stored.settlement_key)
    scope_name = client.name if client else limits.ANONYMOUS
    if isinstance(answer, Limited):
        metrics.RATE_LIMITED.labels("client", scope_name, answer.limit).inc()
        return limits.client_refused(client, answer)
    if isinstance(answer, Spent):
        metrics.RATE_LIMITED.labels("client", scope_name, "budget").inc()
        return limits.budget_spent(client, answer.need, answer.left)
    if isinstance(answer, Conflict):
        # The claim's own remaining life: the latest a retry can find it gone, should the
        # request holding it have died with its replica (a live one renews it, and finishes).
        wait = math.ceil(answer.retry_after)
        return IdempotencyConflict(
            "A request with this idempotency key is still in progress; retry after it finishes "
            f"(if the replica running it has stopped, its claim lapses within {wait}s).",
            headers={"retry-after": str(wait)},
        )
    assert isinstance(answer, Reused)
    return IdempotencyKeyReused(
        "This idempotency key was already used with a different request body.", param="X-Idempotency-Key"
    )


def replay(stored: Stored) -> BytesResponse:
    headers = [(b"x-settlement-key", stored.settlement_key.encode()), (b"idempotent-replayed", b"true")]
    if stored.stream:
        return BytesResponse(
            stored.body,
            status=stored.status,
            headers=[*SSE_HEADERS[1:], *headers],
            media_type=SSE_HEADERS[0][1],
        )
    return BytesResponse(stored.body, status=stored.status, headers=headers)
