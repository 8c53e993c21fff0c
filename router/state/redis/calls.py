"""What each Lua script is given and what its reply means: pure functions, no I/O.

The scripts (router/state/lua) document their KEYS and ARGV by position; these build them in
that order, so a script and its caller are read side by side.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from typing import Any

from ...config import LedgerRetention
from ..base import (
    CONCURRENCY_RETRY,
    Answer,
    Ask,
    Conflict,
    Granted,
    LateError,
    Limited,
    Replay,
    Reused,
    Settle,
    Spent,
    StateError,
    Stored,
    Used,
    Window,
)

DEADLINE = object()
"""Stands for an acquire's deadline in its arguments until the call is written."""
COMPRESS_OVER = 1024
"""Stored answers longer than this many bytes are kept zlib-compressed."""
_COMPRESSED = b"\x00"
"""Marks a compressed stored answer: an answer (JSON or SSE) never starts with a NUL byte."""


def period_ttl(period: str) -> int:
    """How long a period's counters live from its first usage (ms), so they outlive it: a day's
    for 3 days, a month's for 400."""
    if period == "total":
        return 0
    return (3 if len(period) == 10 else 400) * 86_400_000


Call = tuple[list[str], list[Any]]
"""A script's keys and arguments."""


def acquire_call(ask: Ask, lease_ttl_ms: int) -> Call:
    tag = "{" + ask.scope + "}"
    claim = ask.claim
    intent = ask.intent
    keys = [
        tag + ":gcra",
        tag + ":leases",
        f"{tag}:use:{ask.period}",
        f"{tag}:idem:{claim.key if claim else ''}",
        tag + ":held",
        tag + ":intents",
        tag + ":live",
    ]
    args = [
        ask.rpm,
        ask.tpm,
        ask.concurrency,
        ask.tokens,
        ask.allowance_tokens,
        ask.allowance_nanos,
        ask.hold if ask.lease else "",
        lease_ttl_ms,
        1 if claim else 0,
        claim.body_hash if claim else "",
        claim.owner if claim else "",
        int(CONCURRENCY_RETRY * 1000),
        ask.on_exceed,
        ask.cost_nanos,
        ask.prompt,
        ask.n,
        repr(ask.price_input),  # exactly the float the memory store computes with
        repr(ask.price_output),
        intent.body if intent else "",
        intent.settlement_key if intent else "",
        DEADLINE,  # filled in as the call is written: see _with_deadline
    ]
    return keys, args


def answer(ask: Ask, reply: Any) -> Answer | StateError:
    kind = reply[0]
    if kind == b"granted":
        if len(reply) > 6:  # capped to fit the budget: a smaller reservation, in its own hold
            hold = reply[7].decode() if ask.lease else None
            return Granted(window(reply[2:6]), hold, int(reply[1]), capped=int(reply[6]))
        return Granted(window(reply[2:6]), ask.hold if ask.lease else None, int(reply[1]))
    if kind == b"limited":
        return Limited(reply[1].decode(), int(reply[2]) / 1000, window(reply[3:7]))
    if kind == b"spent":
        return Spent(int(reply[1]), int(reply[2]))
    if kind == b"conflict":
        return Conflict(max(1.0, int(reply[1]) / 1000))
    if kind == b"reused":
        return Reused()
    if kind == b"late":
        return LateError("the store ran the step after its deadline: nothing was taken")
    owner, status, stream, body = reply[1:5]
    return Replay(Stored(owner.decode(), int(status), stream == b"1", unpack(body)))


def pack(body: bytes) -> bytes:
    """A stored answer as kept: long ones compressed (streams of text compress ~5x), at zlib's
    fastest level, since it runs on the request's own path."""
    if len(body) <= COMPRESS_OVER:
        return body
    return _COMPRESSED + zlib.compress(body, 1)


def unpack(body: bytes) -> bytes:
    return zlib.decompress(body[1:]) if body.startswith(_COMPRESSED) else body


def window(values: Sequence[Any]) -> Window:
    rpm_remaining, rpm_reset, tpm_remaining, tpm_reset = (int(v) for v in values)
    return Window(rpm_remaining, rpm_reset / 1000, tpm_remaining, tpm_reset / 1000)


def settle_call(settle: Settle, *, retention_ms: int, replay_window_ms: int, ledger: LedgerRetention) -> Call:
    tag = "{" + settle.scope + "}"
    stored = settle.stored
    keys = [
        tag + ":gcra",
        tag + ":leases",
        f"{tag}:done:{settle.settlement_key}",
        f"{tag}:idem:{settle.claim_key or ''}",
        tag + ":ledger",
        tag + ":held",
        tag + ":live",
        tag + ":intents",
        *(f"{tag}:use:{p}" for p in settle.periods),
    ]
    bound, bound_value = ledger_bound(ledger) if settle.record else ("", 0)
    args = [
        settle.hold or "",
        settle.tpm,
        settle.tpm_delta,
        settle.tokens,
        settle.cost_nanos,
        settle.record or b"",
        settle.settlement_key,
        1 if settle.claim_key is not None else 0,
        1 if stored is not None else 0,
        stored.status if stored else 0,
        1 if stored and stored.stream else 0,
        pack(stored.body) if stored else b"",
        retention_ms,
        settle.claim_hash,
        settle.rpm,
        settle.rpm_delta,
        replay_window_ms,
        1 if settle.intent else 0,
        bound,
        bound_value,
        *(period_ttl(p) for p in settle.periods),
        settle.endpoint or "",  # last, after the ttls: ARGV[13 + #KEYS]
    ]
    return keys, args


def used(fields: dict[bytes, bytes]) -> Used:
    """A use hash (settle.lua): `t` and `n`, and `t:<endpoint>`, `n:<endpoint>` per endpoint."""
    parts: dict[str, list[int]] = {}
    for name, value in fields.items():
        kind, _, endpoint = name.decode().partition(":")
        if endpoint:
            parts.setdefault(endpoint, [0, 0])[0 if kind == "t" else 1] = int(value)
    by_endpoint = {endpoint: (tokens, nanos) for endpoint, (tokens, nanos) in parts.items()}
    return Used(int(fields.get(b"t", 0)), int(fields.get(b"n", 0)), by_endpoint)


def ledger_bound(keep: LedgerRetention) -> tuple[str, int | str]:
    """XADD's trim for state.ledger_retention: by age (MINID: stream ids are ms) or length."""
    if keep.records:
        return "MAXLEN", keep.records
    if keep.seconds:
        return "MINID", f"{int((time.time() - keep.seconds) * 1000)}-0"
    return "", 0
