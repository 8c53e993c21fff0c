"""Pure: what a request asks of shared state, and how a refusal reads to the client.

Per client and per provider key: `rpm`, `tpm`, `concurrency`, and an allowance (a client's
`budget`, a key's `quota`) in tokens or cost per day, month or all time. TPM and the
allowance reserve an estimate before the call: the prompt's size plus `max_tokens` (or a
capped default); settlement reconciles it with the real usage. A client's budget is strict:
a request whose reservation is more than what is left is refused (402), or with `on_exceed:
cap` sent with its completion lowered to fit (the store's acquire step decides, atomically).
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Iterable

from .config import Allowance, Client, Limits, Price, Target
from .errors import InsufficientQuota, RateLimited
from .state import Ask, Claim, Limited, Window
from .types import JSON, RawHeaders, Usage

DEFAULT_COMPLETION = 4096
"""Completion tokens reserved when the request sets no max_tokens."""
PROMPT_CAP = 1_000_000
"""An image or file inflates the body far beyond its tokens; keep one estimate from eating a window."""
ANONYMOUS = "_"
"""The one scope all requests share when no clients are configured."""


def client_scope(name: str | None) -> str:
    """A client's scope in shared state, by its name (None: the one anonymous scope)."""
    return "c:" + (name or ANONYMOUS)


def client_scopes(clients: Iterable[Client]) -> list[str]:
    """The scopes requests of these clients are admitted in (none: the one anonymous scope)."""
    return [client_scope(c.name) for c in clients] or [client_scope(None)]


def key_scope(target: Target) -> str:
    return "p:" + target.name


def estimate(body: JSON, body_bytes: int, *, answers: bool = True) -> Usage:
    """An upper estimate: a token is at least ~3 bytes of JSON in any script; the answer is
    at most what the request allows. `answers=False`: a model that only reads (embeddings,
    rerank) uses no completion tokens."""
    prompt = min(PROMPT_CAP, math.ceil(body_bytes / 3))
    if not answers:
        return Usage(prompt, 0)
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    completion = limit if type(limit) is int and limit > 0 else DEFAULT_COMPLETION
    return Usage(prompt, completion * choices(body))


def choices(body: JSON) -> int:
    """How many answers the request asks for (`n`)."""
    n = body.get("n")
    return n if type(n) is int and n > 0 else 1


def cost_nanos(usage: Usage, price: Price | None) -> int:
    """Cost in billionths of the currency unit; prices are per million tokens. Prompt tokens
    served from the provider's cache are priced at `cached_input` where the price names one;
    rounded up once, over the whole sum."""
    if price is None:
        return 0
    cached = min(usage.cached_tokens, usage.prompt_tokens)  # more than the prompt: a provider's miscount
    if cached <= 0 or price.cached_input is None:
        # The same float arithmetic as the stores' cap on a cost budget (state/memory.py, the script).
        return math.ceil(
            usage.prompt_tokens * price.input * 1000 + usage.completion_tokens * price.output * 1000
        )
    return math.ceil(
        (usage.prompt_tokens - cached) * price.input * 1000
        + cached * price.cached_input * 1000
        + usage.completion_tokens * price.output * 1000
    )


def dearest(targets: Iterable[Target]) -> Price | None:
    """The highest price among a model's targets: a cost budget reserves for the worst case."""
    prices = [t.route.price for t in targets if t.route.price is not None]
    if not prices:
        return None
    return max(prices, key=lambda p: (p.input, p.output))


_DAY = 86_400
_periods_of_day: tuple[int | None, tuple[str, str, str]] = (None, ("", "", ""))


def periods(now: float | None = None) -> tuple[str, str, str]:
    """The counter periods usage is added to, in UTC: day, month, all time."""
    global _periods_of_day
    day_number = int(time.time() if now is None else now) // _DAY
    if day_number != _periods_of_day[0]:  # formatted once a day, not once a request
        day = time.strftime("%Y-%m-%d", time.gmtime(day_number * _DAY))
        _periods_of_day = (day_number, (day, day[:7], "total"))
    return _periods_of_day[1]


def period_of(allowance: Allowance, now: float | None = None) -> str:
    day, month, total = periods(now)
    return {"day": day, "month": month, "total": total}[allowance.per]


def seconds_to_rollover(allowance: Allowance, now: float | None = None) -> float:
    """When a spent allowance comes back: the next UTC midnight or first of the month (or never)."""
    now = time.time() if now is None else now
    tm = time.gmtime(now)
    if allowance.per == "day":
        start = (tm.tm_year, tm.tm_mon, tm.tm_mday + 1)
    elif allowance.per == "month":
        start = (tm.tm_year + tm.tm_mon // 12, tm.tm_mon % 12 + 1, 1)
    else:
        return math.inf
    return max(1.0, calendar.timegm((*start, 0, 0, 0, 0, 0, 0)) - now)


def ask(
    scope: str,
    limits: Limits,
    allowance: Allowance | None,
    *,
    reserve: Usage,
    price: Price | None,
    lease: str,
    claim: Claim | None = None,
    budget: bool = False,
    n: int = 1,
    now: float | None = None,
) -> Ask | None:
    """What `scope` must grant; None when it has nothing to check (no round trip needed).
    A client's budget (`budget`) is strict: see Ask.on_exceed; `n` is how `reserve`'s
    completion divides among choices, for a cap."""
    tokens = reserve.total_tokens
    if not (limits.rpm or limits.tpm or limits.concurrency or allowance or claim):
        return None
    priced = price is not None and allowance is not None and allowance.cost is not None
    return Ask(
        scope=scope,
        rpm=limits.rpm or 0,
        tpm=limits.tpm or 0,
        concurrency=limits.concurrency or 0,
        tokens=tokens,
        allowance_tokens=allowance.tokens if allowance and allowance.tokens is not None else -1,
        allowance_nanos=(math.ceil(allowance.cost * 1e9) if allowance and allowance.cost is not None else -1),
        cost_nanos=cost_nanos(reserve, price) if allowance and allowance.cost is not None else 0,
        period=period_of(allowance, now) if allowance else "",
        lease=lease if (limits.concurrency or allowance) else "",
        claim=claim,
        budget=budget,
        on_exceed=allowance.on_exceed if budget and allowance else "",
        prompt=reserve.prompt_tokens,
        n=n,
        price_input=price.input if priced and price else 0.0,
        price_output=price.output if priced and price else 0.0,
    )


def window_headers(window: Window) -> RawHeaders:
    """OpenAI's x-ratelimit-* headers for the limits the scope has."""
    headers: RawHeaders = []
    if window.rpm_remaining >= 0:
        headers += [
            (b"x-ratelimit-remaining-requests", str(window.rpm_remaining).encode()),
            (b"x-ratelimit-reset-requests", openai_duration(window.rpm_reset).encode()),
        ]
    if window.tpm_remaining >= 0:
        headers += [
            (b"x-ratelimit-remaining-tokens", str(window.tpm_remaining).encode()),
            (b"x-ratelimit-reset-tokens", openai_duration(window.tpm_reset).encode()),
        ]
    return headers


def limit_headers(limits: Limits, window: Window) -> RawHeaders:
    headers: RawHeaders = []
    if limits.rpm:
        headers.append((b"x-ratelimit-limit-requests", str(limits.rpm).encode()))
    if limits.tpm:
        headers.append((b"x-ratelimit-limit-tokens", str(limits.tpm).encode()))
    return headers + window_headers(window)


def openai_duration(seconds: float) -> str:
    """SPEC §8: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{round(rest):d}s"


def client_refused(client: Client | None, limited: Limited) -> RateLimited:
    what = {"rpm": "requests per minute", "tpm": "tokens per minute", "concurrency": "concurrent requests"}
    limits = client.limits if client else Limits()
    who = f"'{client.name}'" if client else "this router"
    retry = max(1, math.ceil(limited.retry_after))
    headers = {k.decode(): v.decode() for k, v in limit_headers(limits, limited.window)}
    headers["retry-after"] = str(retry)
    if limited.limit == "reserved":
        message = f"What is left of the budget of {who} is reserved by its requests in flight."
    else:
        value = {"rpm": limits.rpm, "tpm": limits.tpm, "concurrency": limits.concurrency}[limited.limit]
        message = f"Rate limit reached for {who}: {value} {what[limited.limit]}."
    return RateLimited(f"{message} Try again in {retry}s.", headers=headers)


def budget_spent(client: Client | None, need: int = 0, left: int = 0) -> InsufficientQuota:
    """402: the budget is spent, or (need > 0) this request needs more than is left of it
    (`need` and `left` in tokens, or nanos for a cost budget)."""
    budget = client.budget if client else None
    per = {"day": "today", "month": "this month", "total": ""}.get(budget.per, "") if budget else ""
    who = f"'{client.name}'" if client else "this router"
    if need <= 0 or budget is None:
        return InsufficientQuota(f"The budget of {who} is spent {per}".rstrip() + ".")

    in_tokens = budget.tokens is not None

    def amount(value: int) -> str:
        return f"{value} tokens" if in_tokens else f"{value / 1e9:.9g} (cost)"

    if budget.on_exceed == "cap":
        needs = f"at least {amount(need)} (its prompt, estimated, and one completion token)"
        hint = "Send a shorter prompt."
    else:
        needs = (
            f"up to {amount(need)} (its prompt, estimated, plus max_tokens or {DEFAULT_COMPLETION}, times n)"
        )
        hint = "Lower max_tokens (or max_completion_tokens), or send a shorter prompt."
    return InsufficientQuota(
        f"This request needs {needs}, more than the {amount(left)} left of the budget of {who} {per}".rstrip()
        + f". {hint}"
    )
