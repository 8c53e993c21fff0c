"""The pure and near-pure parts of shared state: GCRA, limits arithmetic, the Redis-down guard,
and the one boundary where redis-py's exceptions become StateError."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import replace

import pytest
import redis.exceptions

from router import limits, translate
from router.config import Allowance, Client, Limits, Price
from router.state import (
    Ask,
    Claim,
    Granted,
    GuardedStore,
    Limited,
    MemoryStore,
    Settle,
    StateError,
    StateUnavailableError,
    Used,
    gcra,
)
from router.state.base import Answer, LateError
from router.state.redis import RedisStore
from router.types import Usage


def test_gcra_bursts_to_the_limit_then_refills_evenly() -> None:
    tat = None
    for _ in range(3):
        decision = gcra.check(tat, 100.0, limit=3, cost=1)
        assert decision.allowed
        tat = decision.tat
    refused = gcra.check(tat, 100.0, limit=3, cost=1)
    assert not refused.allowed and refused.retry_after == pytest.approx(20.0) and refused.remaining == 0
    assert gcra.check(tat, 120.0, limit=3, cost=1).allowed  # one refilled after 60 / 3 s
    assert gcra.reconcile(tat, 100.0, limit=3, delta=-1) == pytest.approx(140.0)
    # A reservation that already drained out of the window cannot be credited again ...
    assert gcra.reconcile(50.0, 100.0, limit=3, delta=-2) == 100.0
    # ... and more cost counts from now, not from a time already past.
    assert gcra.reconcile(50.0, 100.0, limit=3, delta=1) == pytest.approx(120.0)


def test_openai_durations() -> None:
    assert [limits.openai_duration(s) for s in (0.02, 1.5, 12, 360, 61.4)] == [
        "20ms",
        "1.5s",
        "12s",
        "6m0s",
        "1m1s",
    ]


def test_the_estimate_is_an_upper_bound_of_what_the_request_may_use() -> None:
    body = {"model": "m", "messages": [], "max_tokens": 100, "n": 2}
    assert limits.estimate(body, 300) == Usage(100, 200)
    assert limits.estimate({"model": "m"}, 3).completion_tokens == limits.DEFAULT_COMPLETION


def test_allowances_roll_over_at_utc_midnight_and_the_first_of_the_month() -> None:
    now = 1795392000.0 - 10  # 2026-11-22T23:59:50Z
    assert limits.seconds_to_rollover(Allowance(per="day"), now) == pytest.approx(10)
    assert limits.period_of(Allowance(per="month"), now) == "2026-11"
    december = limits.seconds_to_rollover(Allowance(per="month"), 1796083200.0 - 5)  # 2026-11-30T23:59:55Z
    assert december == pytest.approx(5)


def test_nothing_to_check_needs_no_round_trip() -> None:
    none = limits.ask("c:a", Limits(), None, reserve=Usage(1, 1), price=None, lease="l")
    assert none is None
    with_claim = limits.ask(
        "c:a", Limits(), None, reserve=Usage(1, 1), price=None, lease="l", claim=Claim("k", "h", "o")
    )
    assert with_claim is not None and with_claim.lease == ""  # no slot or reservation to hold


def test_a_budget_asks_strictly_and_a_key_quota_as_before() -> None:
    price = Price(input=2.5, output=10)
    cap = Allowance(per="month", cost=1.0, on_exceed="cap")
    reserve = limits.estimate({"model": "m", "max_tokens": 50, "n": 2}, 30)
    assert reserve == Usage(10, 100)
    budget = limits.ask("c:a", Limits(), cap, reserve=reserve, price=price, lease="l", budget=True, n=2)
    assert budget is not None and budget.on_exceed == "cap"
    assert (budget.prompt, budget.n, budget.price_input, budget.price_output) == (10, 2, 2.5, 10)
    assert budget.cost_nanos == limits.cost_nanos(reserve, price) == 1_025_000
    quota = limits.ask("p:k", Limits(), cap, reserve=reserve, price=price, lease="l")
    assert quota is not None and quota.on_exceed == ""  # a key's quota: admitted while anything is left
    tokens = limits.ask(
        "c:a", Limits(), Allowance(per="day", tokens=9), reserve=reserve, price=price, lease="l", budget=True
    )
    assert tokens is not None and tokens.on_exceed == "refuse" and tokens.price_output == 0.0
    assert [limits.choices(b) for b in ({}, {"n": 3}, {"n": None}, {"n": True})] == [1, 3, 1, 1]


def test_a_402_says_what_the_request_needs_and_what_is_left() -> None:
    client = Client(name="team", key_sha256=b"", budget=Allowance(per="month", tokens=120))
    assert str(limits.budget_spent(client)) == "The budget of 'team' is spent this month."
    message = str(limits.budget_spent(client, 4_123, 96))
    assert message.startswith("This request needs up to 4123 tokens (its prompt, estimated, plus max_tokens")
    assert "more than the 96 tokens left of the budget of 'team' this month. Lower max_tokens" in message
    costly = replace(client, budget=Allowance(per="day", cost=0.5, on_exceed="cap"))
    message = str(limits.budget_spent(costly, 27_000_000, 3_000_000))
    assert message.startswith("This request needs at least 0.027 (cost) (its prompt, estimated, and one")
    assert "more than the 0.003 (cost) left of the budget of 'team' today." in message


def test_a_cap_lowers_the_completion_field_the_client_used() -> None:
    assert translate.cap_completion({"max_tokens": 500}, 69) == {"max_tokens": 69}
    assert translate.cap_completion({"max_completion_tokens": 500}, 69) == {"max_completion_tokens": 69}
    assert translate.cap_completion({}, 69) == {"max_completion_tokens": 69}
    both = translate.cap_completion({"max_tokens": 40, "max_completion_tokens": 500}, 69)
    assert both == {"max_tokens": 40, "max_completion_tokens": 69}
    body = {"max_tokens": None}
    assert translate.cap_completion(body, 5) == {"max_tokens": 5}
    assert body == {"max_tokens": None}  # the client's body is left as it came


def test_every_redis_exception_becomes_a_state_error() -> None:
    import asyncio

    store = RedisStore.__new__(RedisStore)  # only the error boundary, no connection
    store._timeout, store._slots = 1.0, asyncio.Semaphore(1)
    classes = [
        c for _, c in inspect.getmembers(redis.exceptions, inspect.isclass) if issubclass(c, BaseException)
    ]
    assert len(classes) > 20

    def make(cls: type[BaseException]) -> BaseException:
        try:
            return cls("x")
        except ValueError:  # MOVED / ASK replies carry "<slot> <host:port>"
            return cls("1 127.0.0.1:1")

    async def boom(error: BaseException) -> None:
        raise error

    for cls in classes:
        with pytest.raises(StateError):
            asyncio.run(store._do(boom(make(cls))))


class FlakyStore(MemoryStore):
    """A real memory store that can be switched off, as a Redis that stopped answering."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.down_scopes: set[str] = set()
        """Scopes that fail while the others answer: a cluster with one node down."""
        self.calls = 0
        self.late = False
        """Answering, but running every acquire past its deadline (a Redis that was busy)."""

    async def acquire(self, ask: Ask) -> Answer:
        self.calls += 1
        if self.down or ask.scope in self.down_scopes:
            raise StateError("down")
        if self.late:
            raise LateError("late")
        return await super().acquire(ask)

    async def settle(self, settle: Settle) -> bool:
        self.calls += 1
        if self.down or settle.scope in self.down_scopes:
            raise StateError("down")
        return await super().settle(settle)

    async def renew(self, scope: str, holds: Sequence[str], claims: Sequence[tuple[str, str]]) -> None:
        if self.down:
            raise StateError("down")

    async def ping(self) -> None:
        if self.down:
            raise StateError("down")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_while_the_store_is_down_limits_are_local_and_divided_by_replicas() -> None:
    store, clock, errors = FlakyStore(), Clock(), []
    guard = GuardedStore(store, replicas=2, on_error=errors.append, clock=clock)
    store.down = True
    answers = [await guard.acquire(Ask("c:a", rpm=10)) for _ in range(6)]
    assert [type(a).__name__ for a in answers] == ["Granted"] * 5 + ["Limited"]
    assert all(a.local for a in answers[:5])  # type: ignore[union-attr]
    assert guard.degraded and errors == ["acquire"]
    assert store.calls == 1  # the breaker: no further calls until its pause ends


async def test_a_step_run_late_fails_its_request_but_leaves_the_store_up() -> None:
    store, errors = FlakyStore(), []
    guard = GuardedStore(store, on_error=errors.append, clock=Clock())
    store.late = True
    keyed = await guard.acquire_all([Ask("c:a", claim=Claim("k", "h", "o"))])
    assert isinstance(keyed[0], StateUnavailableError)  # exactly-once cannot be promised for it
    local = await guard.acquire(Ask("c:a", rpm=10))
    assert isinstance(local, Granted) and local.local
    assert not guard.degraded and errors == ["acquire", "acquire"]
    store.late = False
    assert store.calls == 2 and isinstance(await guard.acquire(Ask("c:a", rpm=10)), Granted)
    assert store.calls == 3  # no breaker pause: the next request asked the store again


async def test_an_idempotency_key_cannot_be_promised_while_the_store_is_down() -> None:
    store = FlakyStore()
    guard = GuardedStore(store, clock=Clock())
    store.down = True
    with pytest.raises(StateUnavailableError):
        await guard.acquire(Ask("c:a", claim=Claim("k", "h", "o")))


async def test_closed_refuses_everything_while_the_store_is_down() -> None:
    store = FlakyStore()
    guard = GuardedStore(store, closed=True, clock=Clock())
    store.down = True
    with pytest.raises(StateUnavailableError):
        await guard.acquire(Ask("c:a", rpm=10))


async def test_the_outbox_is_written_once_when_the_store_returns() -> None:
    store, clock = FlakyStore(), Clock()
    guard = GuardedStore(store, clock=clock)
    granted = await guard.acquire(Ask("c:a", concurrency=1, lease="l1"))
    assert isinstance(granted, Granted) and not granted.local
    store.down = True
    record = b'{"n":1}'
    await guard.settle(
        Settle("c:a", "stl_1", hold=granted.hold, tokens=5, periods=("total",), record=record), local=False
    )
    assert len(guard.outbox) == 1
    clock.now += 1.0
    await guard.flush()  # still down: kept
    assert len(guard.outbox) == 1
    store.down = False
    clock.now += 10.0
    await guard.check()
    assert not guard.degraded
    assert await guard.flush() == 1 and not guard.outbox
    guard.outbox.append(Settle("c:a", "stl_1", tokens=5, periods=("total",), record=record))  # replayed
    await guard.flush()
    assert await store.records("c:a") == [record]
    assert (await store.usage("c:a", ["total"]))["total"] == Used(5, 0)
    # The lease it held was given back when the record was finally written.
    assert isinstance(await guard.acquire(Ask("c:a", concurrency=1, lease="l2")), Granted)


async def test_a_local_grant_settles_locally_and_its_record_waits_for_the_store() -> None:
    store, clock = FlakyStore(), Clock()
    guard = GuardedStore(store, clock=clock)
    store.down = True
    granted = await guard.acquire(Ask("c:a", concurrency=1, lease="l1"))
    assert isinstance(granted, Granted) and granted.local
    assert isinstance(await guard.acquire(Ask("c:a", concurrency=1, lease="l2")), Limited)
    await guard.settle(
        Settle("c:a", "stl_1", hold=granted.hold, tokens=3, periods=("total",), record=b"{}"), local=True
    )
    assert isinstance(await guard.acquire(Ask("c:a", concurrency=1, lease="l3")), Granted)
    assert len(guard.outbox) == 1 and guard.outbox.head.hold is None


async def test_one_batch_falls_back_ask_by_ask_while_the_store_is_down() -> None:
    store, errors = FlakyStore(), []
    guard = GuardedStore(store, on_error=errors.append, clock=Clock())
    store.down = True
    client, key = await guard.acquire_all([Ask("c:a", claim=Claim("k", "h", "o")), Ask("p:x/x-0", rpm=10)])
    assert isinstance(client, StateUnavailableError)  # exactly-once cannot be promised
    assert isinstance(key, Granted) and key.local  # a key's limits fall back to this replica
    assert errors == ["acquire"]  # one round trip, one error for the breaker


async def test_a_scope_that_answered_keeps_its_grant_when_another_failed() -> None:
    store, errors = FlakyStore(), []
    guard = GuardedStore(store, on_error=errors.append, clock=Clock())
    store.down_scopes = {"p:x/x-0"}
    client, key = await guard.acquire_all(
        [Ask("c:a", claim=Claim("k", "h", "o")), Ask("p:x/x-0", concurrency=1, lease="l1")]
    )
    assert isinstance(client, Granted) and not client.local
    assert isinstance(key, Granted) and key.local
    assert errors == ["acquire"] and guard.degraded


async def test_settle_all_settles_each_where_it_was_granted_and_keeps_what_must_be_kept() -> None:
    store, clock = FlakyStore(), Clock()
    guard = GuardedStore(store, clock=clock)
    store.down_scopes = {"p:x/x-0"}
    client, key = await guard.acquire_all(
        [Ask("c:a", concurrency=1, lease="l1"), Ask("p:x/x-0", concurrency=1, lease="l2")]
    )
    assert isinstance(client, Granted) and isinstance(key, Granted) and key.local
    clock.now += 10.0  # the breaker's pause is over
    await guard.settle_all(
        [
            (Settle("c:a", "stl_1", hold=client.hold, tokens=3, periods=("total",), record=b"{}"), False),
            (Settle("p:x/x-0", "stl_1", hold=key.hold, tokens=3, periods=("total",)), True),
            (Settle("p:x/x-0", "stl_2", tokens=4, periods=("total",)), False),  # fails: waits
            (Settle("p:x/x-0", "stl_2:l9", hold="l9|0|0"), False),  # fails: only a lease, which expires
        ]
    )
    assert await store.records("c:a") == [b"{}"]
    assert isinstance(await store.acquire(Ask("c:a", concurrency=1, lease="l3")), Granted)
    assert isinstance(await guard.local.acquire(Ask("p:x/x-0", concurrency=1, lease="l4")), Granted)
    assert [(s.settlement_key, s.hold) for s in guard.outbox] == [("stl_1", None), ("stl_2", None)]


async def test_key_leases_of_requests_without_client_limits_are_renewed() -> None:
    import asyncio

    from router import config as configuration
    from router.admission import admit
    from router.call import Call
    from router.ledger import Ledger

    parsed = configuration.parse(
        "providers: {p: {base_url: 'http://127.0.0.1:1', keys: [k], limits: {concurrency: 1}, "
        "models: {m: {}}}}\n",
        env={},
    )
    store = MemoryStore(lease_ttl=0.3)
    ledger = Ledger(parsed, GuardedStore(store))
    (target,) = parsed.targets["m"]
    body = {"model": "m", "messages": []}
    call = Call.of("req_1", body, b"{}", client=None, targets=(target,), headers={}, idempotency=None)
    admission = admit(ledger, call)
    assert await admission.reserve_key(target) is None
    for _ in range(3):
        await asyncio.sleep(0.2)
        await ledger._renew()
    assert isinstance(await store.acquire(Ask("p:p/p-0", concurrency=1, lease="other")), Limited)


async def test_the_memory_store_stays_bounded_however_many_requests_settle(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from router.state import memory

    monkeypatch.setattr(memory, "LEDGER_MAX", 5)
    monkeypatch.setattr(memory, "DONE_MAX", 7)
    store = MemoryStore()
    for i in range(50):
        await store.settle(Settle("c:a", f"stl_{i}", tokens=1, periods=("total",), record=b"{}"))
    assert len(await store.records("c:a")) == 5
    assert len(store._scopes["c:a"].done) == 7
    assert not await store.settle(Settle("c:a", "stl_49", tokens=1, periods=("total",), record=b"{}"))
    assert (await store.usage("c:a", ["total"]))["total"].tokens == 50


def test_a_settlement_record_is_kept_in_an_allocation_of_its_own_size() -> None:
    import tracemalloc

    import orjson

    from router.records import compact

    record = {"settlement_key": "stl_0123456789abcdef01234567", "tokens": 12, "cost": 0.5}
    tracemalloc.start()
    try:
        kept = [compact(orjson.dumps(record)) for _ in range(200)]
        size, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size < 200 * 512, f"{size / 200:.0f} bytes per ~70-byte record"
    assert orjson.loads(kept[0]) == record


async def test_a_redis_that_never_answers_is_a_state_error_within_the_timeout() -> None:
    import asyncio
    import time

    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accepts, reads, never answers
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
    started = time.monotonic()
    try:
        with pytest.raises(StateError, match=r"no answer within 0\.[2-4]\ds"):
            await store.ping()
        assert time.monotonic() - started < 2
    finally:
        await store.aclose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


def test_a_memory_store_settles_without_ever_suspending() -> None:
    # Ledger.settle_now awaits a memory settlement directly, with no shielding task: sound only
    # while no step can suspend (a cancellation could then cut it short).
    guard = GuardedStore(MemoryStore())
    assert guard.immediate
    step = guard.settle_all([(Settle("c:a", "stl_1", tokens=3, periods=("total",), record=b"{}"), False)])
    with pytest.raises(StopIteration):
        step.send(None)  # ran to its end on the first step
    acquiring = guard.acquire_all([Ask("c:a", rpm=5, tokens=1)])
    with pytest.raises(StopIteration):
        acquiring.send(None)


async def test_shutdown_writes_the_outbox_even_while_the_breaker_pauses() -> None:
    guard = GuardedStore(MemoryStore(), clock=lambda: 100.0)
    guard.outbox.append(Settle("c:a", "stl_1", tokens=5, periods=("total",), record=b"{}"))
    guard._down_until = 101.0  # marked down a moment ago, by a timeout under load
    assert await guard.flush() == 0
    assert await guard.flush(force=True) == 1  # Ledger.aclose: the last chance
    assert not guard.outbox


async def test_a_request_its_client_refuses_is_not_left_in_flight() -> None:
    from router import config as configuration
    from router.admission import admit
    from router.call import Call
    from router.errors import RateLimited
    from router.ledger import Ledger

    parsed = configuration.parse(
        "clients: [{name: c, key: sk-c, limits: {rpm: 1}}]\n"
        "providers: {p: {base_url: 'http://127.0.0.1:1', keys: [k], models: {m: {}}}}\n",
        env={},
    )
    ledger = Ledger(parsed, GuardedStore(MemoryStore()))
    (target,) = parsed.targets["m"]
    body = {"model": "m", "messages": []}
    outcomes = []
    for i in range(2):
        call = Call.of(
            f"req_{i}", body, b"{}", client=parsed.clients[0], targets=(target,), headers={}, idempotency=None
        )
        try:
            outcomes.append(await admit(ledger, call).reserve_key(target))
        except RateLimited:
            outcomes.append("refused")
    assert outcomes == [None, "refused"]
    assert ledger.in_flight == 1  # the admitted one only: a refusal holds nothing to renew or settle
