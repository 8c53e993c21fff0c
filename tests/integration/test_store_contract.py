"""One contract for every Store: memory, a real redis-server, and a real 3-master Redis Cluster.

Each test runs against all three backends. Time in Redis is Redis `TIME`, so the tests that
need time to pass (expiry) sleep for it, with generous margins.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import orjson
import pytest

from router import limits
from router.config import Price
from router.state import (
    Ask,
    Claim,
    Conflict,
    Granted,
    Limited,
    MemoryStore,
    Replay,
    Reused,
    Settle,
    Spent,
    Store,
    Stored,
)
from router.state.redis import RedisStore
from router.types import Usage
from tests.redis_rig import RedisCluster, RedisServer

BACKENDS = ["memory", "redis", "cluster"]
MakeStore = Callable[..., Store]


@pytest.fixture(params=BACKENDS)
async def make_store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeStore]:
    made: list[Store] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("fresh_redis")
        url, cluster = server.url, False
    elif request.param == "cluster":
        nodes: RedisCluster = request.getfixturevalue("redis_cluster")
        nodes.flush()
        url, cluster = nodes.url.replace("+cluster", ""), True

    def make(**options: float) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(**options)
        else:
            store = RedisStore(url, cluster=cluster, timeout=2.0, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def lease() -> str:
    return os.urandom(6).hex()


def record(n: int) -> bytes:
    return orjson.dumps({"n": n})


async def test_rpm_admits_a_burst_of_the_limit_then_says_when(store: Store) -> None:
    answers = [await store.acquire(Ask("c:a", rpm=5)) for _ in range(6)]
    assert all(isinstance(a, Granted) for a in answers[:5])
    assert [a.window.rpm_remaining for a in answers[:5]] == [4, 3, 2, 1, 0]  # type: ignore[union-attr]
    last = answers[5]
    assert isinstance(last, Limited) and last.limit == "rpm"
    assert 0 < last.retry_after <= 12.5  # one request refills every 60 / 5 s


async def test_a_burst_larger_than_the_connection_pool_waits_for_connections(store: Store) -> None:
    # 600 at once: more than redis-py's default pool (100), which raised MaxConnectionsError.
    answers = await asyncio.gather(*(store.acquire(Ask("c:a", rpm=1000)) for _ in range(600)))
    assert sum(isinstance(a, Granted) for a in answers) == 600


async def test_concurrent_acquires_admit_exactly_the_limit(store: Store) -> None:
    answers = await asyncio.gather(*(store.acquire(Ask("c:a", rpm=20)) for _ in range(60)))
    assert sum(isinstance(a, Granted) for a in answers) == 20


async def test_a_refused_request_consumes_nothing(store: Store) -> None:
    first = await store.acquire(Ask("c:a", rpm=10, tpm=100, tokens=80))
    assert isinstance(first, Granted) and first.window.rpm_remaining == 9
    refused = await store.acquire(Ask("c:a", rpm=10, tpm=100, tokens=80))
    assert isinstance(refused, Limited) and refused.limit == "tpm"
    after = await store.acquire(Ask("c:a", rpm=10, tpm=100, tokens=10))
    assert isinstance(after, Granted)
    assert after.window.rpm_remaining == 8  # the refused one took no request from the window
    assert after.window.tpm_remaining == 10


async def test_tpm_reserves_the_estimate_and_reconciles_with_real_usage(store: Store) -> None:
    granted = await store.acquire(Ask("c:a", tpm=100, tokens=80))
    assert isinstance(granted, Granted) and granted.tokens == 80
    assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=80)), Limited)
    await store.settle(Settle("c:a", "s1", tpm=100, tpm_delta=10 - 80))  # it used 10
    assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=80)), Granted)


async def test_an_estimate_over_the_whole_tpm_limit_is_capped_so_it_can_ever_run(store: Store) -> None:
    granted = await store.acquire(Ask("c:a", tpm=100, tokens=5000))
    assert isinstance(granted, Granted) and granted.tokens == 100


async def test_concurrency_slots_are_leases_given_back_by_settle(store: Store) -> None:
    holds = []
    for _ in range(2):
        answer = await store.acquire(Ask("c:a", concurrency=2, lease=lease()))
        assert isinstance(answer, Granted) and answer.hold is not None
        holds.append(answer.hold)
    full = await store.acquire(Ask("c:a", concurrency=2, lease=lease()))
    assert isinstance(full, Limited) and full.limit == "concurrency" and full.retry_after > 0
    await store.settle(Settle("c:a", "s1", hold=holds[0]))
    assert isinstance(await store.acquire(Ask("c:a", concurrency=2, lease=lease())), Granted)


async def test_calls_made_together_are_each_answered_as_if_alone(store: Store) -> None:
    """Sixty requests at once (on one Redis they share round trips, state/trips.py): each gets
    its own answer, and the limit holds over all of them."""
    answers = await asyncio.gather(
        *(store.acquire_all([Ask("c:a", concurrency=10, lease=lease())]) for _ in range(60))
    )
    granted = [a for (a,) in answers if isinstance(a, Granted)]
    assert len(granted) == 10
    assert all(isinstance(a, Limited) and a.limit == "concurrency" for (a,) in answers if a not in granted)
    settled = await asyncio.gather(
        *(store.settle_all([Settle("c:a", f"t{n}", hold=g.hold, tokens=1)]) for n, g in enumerate(granted))
    )
    assert settled == [[True]] * 10
    again = await asyncio.gather(
        *(store.acquire_all([Ask("c:a", concurrency=10, lease=lease())]) for _ in range(12))
    )
    assert sum(isinstance(a, Granted) for (a,) in again) == 10  # every slot given back, once


async def test_a_lease_nobody_renews_expires(make_store: MakeStore) -> None:
    store = make_store(lease_ttl=0.3)
    assert isinstance(await store.acquire(Ask("c:a", concurrency=1, lease=lease())), Granted)
    assert isinstance(await store.acquire(Ask("c:a", concurrency=1, lease=lease())), Limited)
    await asyncio.sleep(0.6)  # its replica died: nobody settles or renews it
    assert isinstance(await store.acquire(Ask("c:a", concurrency=1, lease=lease())), Granted)


async def test_a_renewed_lease_stays(make_store: MakeStore) -> None:
    store = make_store(lease_ttl=1.5)
    granted = await store.acquire(Ask("c:a", concurrency=1, lease=lease()))
    assert isinstance(granted, Granted) and granted.hold is not None
    for _ in range(4):  # 2 s in all: longer than the lease, renewed well within it
        await asyncio.sleep(0.5)
        await store.renew("c:a", [granted.hold], [])
    assert isinstance(await store.acquire(Ask("c:a", concurrency=1, lease=lease())), Limited)


async def test_a_token_budget_counts_reservations_in_flight(store: Store) -> None:
    budget = {"allowance_tokens": 100, "period": "total"}
    first = await store.acquire(Ask("c:a", tokens=60, lease=lease(), **budget))  # type: ignore[arg-type]
    second = await store.acquire(Ask("c:a", tokens=60, lease=lease(), **budget))  # type: ignore[arg-type]
    assert isinstance(first, Granted) and isinstance(second, Granted)
    # 120 reserved of 100 (the overdraw is at most the last request's reservation): nothing is
    # spent yet, but nothing is left either, until the requests in flight settle.
    held = await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget))  # type: ignore[arg-type]
    assert isinstance(held, Limited) and held.limit == "reserved" and held.retry_after > 0
    assert first.hold is not None and second.hold is not None
    await store.settle(Settle("c:a", "s1", hold=first.hold, tokens=30, periods=("total",), record=record(1)))
    await store.settle(Settle("c:a", "s2", hold=second.hold, tokens=30, periods=("total",), record=record(2)))
    assert (await store.usage("c:a", ["total"]))["total"].tokens == 60
    third = await store.acquire(Ask("c:a", tokens=50, lease=lease(), **budget))  # type: ignore[arg-type]
    assert isinstance(third, Granted) and third.hold is not None
    await store.settle(Settle("c:a", "s3", hold=third.hold, tokens=45, periods=("total",), record=record(3)))
    assert isinstance(await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget)), Spent)  # type: ignore[arg-type]


async def test_a_lease_that_expires_gives_its_reservation_back(make_store: MakeStore) -> None:
    store = make_store(lease_ttl=0.3)
    budget = {"allowance_tokens": 100, "period": "total"}
    assert isinstance(await store.acquire(Ask("c:a", tokens=100, lease=lease(), **budget)), Granted)  # type: ignore[arg-type]
    assert isinstance(await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget)), Limited)  # type: ignore[arg-type]
    await asyncio.sleep(0.6)  # its replica died before settling
    assert isinstance(await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget)), Granted)  # type: ignore[arg-type]


async def test_a_stored_answer_survives_its_claim_expiring_while_the_settlement_waited(
    make_store: MakeStore,
) -> None:
    store = make_store(lease_ttl=0.3)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "hash-a", "stl_1"))), Granted)
    await asyncio.sleep(0.6)  # Redis was down; the settlement sat in an outbox
    stored = Stored("stl_1", 200, False, b"{}")
    settle = Settle(
        "c:a", "stl_1", claim_key="k", claim_hash="hash-a", stored=stored, tokens=1, record=record(1)
    )
    assert await store.settle(settle)
    again = await store.acquire(Ask("c:a", claim=Claim("k", "hash-a", "stl_2")))
    assert isinstance(again, Replay) and again.stored == stored
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "hash-b", "stl_3"))), Reused)


async def test_a_refund_gives_back_only_what_is_still_in_the_window(store: Store) -> None:
    assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=100)), Granted)
    await store.settle(Settle("c:a", "s1", tpm=100, tpm_delta=-100))
    await store.settle(Settle("c:a", "s2", tpm=100, tpm_delta=-100))  # nothing more to give back
    assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=100)), Granted)
    assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=10)), Limited)


async def test_a_cost_budget_in_nanos(store: Store) -> None:
    budget = {"allowance_nanos": 1_000, "period": "2026-11"}
    granted = await store.acquire(Ask("c:a", cost_nanos=900, lease=lease(), **budget))  # type: ignore[arg-type]
    assert isinstance(granted, Granted)
    await store.settle(Settle("c:a", "s1", hold=granted.hold, cost_nanos=1_000, periods=("2026-11",)))
    assert isinstance(await store.acquire(Ask("c:a", cost_nanos=1, lease=lease(), **budget)), Spent)  # type: ignore[arg-type]
    assert isinstance(
        await store.acquire(Ask("c:a", cost_nanos=1, lease=lease(), period="2026-12", allowance_nanos=1_000)),
        Granted,
    )


def budget(on_exceed: str = "refuse", **more: Any) -> dict[str, Any]:
    """A client's budget of 100 tokens (as limits.ask makes it), strict by default."""
    return {"allowance_tokens": 100, "period": "total", "budget": True, "on_exceed": on_exceed, **more}


async def spend(store: Store, tokens: int = 0, nanos: int = 0) -> None:
    await store.settle(Settle("c:a", lease(), tokens=tokens, cost_nanos=nanos, periods=("total",)))


async def test_a_strict_budget_refuses_a_request_that_needs_more_than_is_left(store: Store) -> None:
    await spend(store, 70)
    refused = await store.acquire(Ask("c:a", rpm=10, tokens=40, lease=lease(), **budget()))
    assert refused == Spent(need=40, left=30)  # the whole reservation, not just what is left
    exact = await store.acquire(Ask("c:a", rpm=10, tokens=30, lease=lease(), **budget()))
    assert isinstance(exact, Granted) and exact.capped == 0
    assert exact.window.rpm_remaining == 9  # the refused one took nothing
    await store.settle(Settle("c:a", "s1", hold=exact.hold, tokens=30, periods=("total",)))
    assert await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget())) == Spent()  # spent outright


async def test_a_strict_budget_answers_reserved_while_requests_in_flight_hold_what_is_left(
    store: Store,
) -> None:
    first = await store.acquire(Ask("c:a", tokens=60, lease=lease(), **budget()))
    assert isinstance(first, Granted)
    # 50 fits what is left (100), not beside the 60 in flight: wait for it, not 402, not an overdraw.
    held = await store.acquire(Ask("c:a", tokens=50, lease=lease(), **budget()))
    assert isinstance(held, Limited) and held.limit == "reserved" and held.retry_after > 0
    assert isinstance(await store.acquire(Ask("c:a", tokens=40, lease=lease(), **budget())), Granted)
    assert isinstance(await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget())), Limited)
    await store.settle(Settle("c:a", "s1", hold=first.hold, tokens=20, periods=("total",)))
    assert isinstance(await store.acquire(Ask("c:a", tokens=40, lease=lease(), **budget())), Granted)


async def test_concurrent_requests_never_reserve_more_than_a_strict_budget(store: Store) -> None:
    answers = await asyncio.gather(
        *(store.acquire(Ask("c:a", tokens=30, lease=lease(), **budget())) for _ in range(20))
    )
    assert sum(isinstance(a, Granted) for a in answers) == 3  # 90 of 100; the rest wait ("reserved")
    assert all(isinstance(a, Granted) or (isinstance(a, Limited) and a.limit == "reserved") for a in answers)


async def test_cap_grants_what_is_left_beside_what_is_held_with_the_completion_lowered(store: Store) -> None:
    await spend(store, 70)
    in_flight = await store.acquire(Ask("c:a", tokens=10, lease=lease(), **budget()))
    assert isinstance(in_flight, Granted)
    # 8 prompt + 2 x 50 completion = 108 > 30 left; 20 beside the 10 held: 2 x 6 completion fits.
    ask = Ask("c:a", tpm=1000, tokens=108, lease=lease(), **budget("cap", prompt=8, n=2))
    capped = await store.acquire(ask)
    assert isinstance(capped, Granted) and capped.capped == 6
    assert capped.tokens == 20 and capped.hold == f"{ask.lease}|20|0"  # TPM and the hold take the lowered 20
    # Nothing left beside the two in flight; their settlements give back exactly what they held.
    assert isinstance(await store.acquire(Ask("c:a", tokens=1, lease=lease(), **budget())), Limited)
    await store.settle(Settle("c:a", "s1", hold=in_flight.hold))
    await store.settle(Settle("c:a", "s2", hold=capped.hold))
    assert isinstance(await store.acquire(Ask("c:a", tokens=30, lease=lease(), **budget())), Granted)


async def test_cap_refuses_when_not_one_completion_token_fits(store: Store) -> None:
    await spend(store, 70)
    # The prompt (40) alone is more than the 30 left: 402, saying the least it would need.
    alone = await store.acquire(Ask("c:a", tokens=90, lease=lease(), **budget("cap", prompt=40)))
    assert alone == Spent(need=41, left=30)
    # 25 + 1 fits the 30 left, but not beside 10 in flight: wait for them.
    assert isinstance(await store.acquire(Ask("c:a", tokens=10, lease=lease(), **budget())), Granted)
    held = await store.acquire(Ask("c:a", tokens=75, lease=lease(), **budget("cap", prompt=25)))
    assert isinstance(held, Limited) and held.limit == "reserved"
    # A request that fits is not capped.
    whole = await store.acquire(Ask("c:a", tokens=20, lease=lease(), **budget("cap", prompt=10)))
    assert isinstance(whole, Granted) and whole.capped == 0


async def test_cap_on_a_cost_budget_converts_through_the_price(store: Store) -> None:
    price = Price(input=0.3, output=0.7)  # per million tokens: floats that do not add up exactly
    await spend(store, nanos=123_457)
    reserve = Usage(1_000, 3 * 4096)
    ask = Ask(
        "c:a", tokens=reserve.total_tokens, cost_nanos=limits.cost_nanos(reserve, price), lease=lease(),
        period="total", budget=True, on_exceed="cap", allowance_nanos=5_000_000, prompt=1_000, n=3,
        price_input=price.input, price_output=price.output,
    )  # fmt: skip
    capped = await store.acquire(ask)
    room = 5_000_000 - 123_457
    fits = [c for c in range(4097) if limits.cost_nanos(Usage(1_000, 3 * c), price) <= room]
    assert isinstance(capped, Granted) and capped.capped == max(fits) < 4096
    nanos = limits.cost_nanos(Usage(1_000, 3 * capped.capped), price)
    assert capped.hold == f"{ask.lease}|0|{nanos}"
    refused = await store.acquire(replace(ask, lease=lease(), on_exceed="refuse"))
    assert refused == Spent(need=ask.cost_nanos, left=room)


async def test_a_settlement_is_applied_once_however_often_it_is_replayed(store: Store) -> None:
    settle = Settle("c:a", "stl_1", tokens=7, cost_nanos=3, periods=("2026-11-22", "total"), record=record(1))
    assert await store.settle(settle) is True
    assert await store.settle(settle) is False  # an outbox replay of a write whose reply was lost
    usage = await store.usage("c:a", ["2026-11-22", "total", "2026-11-23"])
    assert (usage["2026-11-22"].tokens, usage["total"].cost_nanos, usage["2026-11-23"].tokens) == (7, 3, 0)
    assert await store.records("c:a") == [record(1)]


async def test_usage_is_also_counted_by_endpoint_once_per_settlement(store: Store) -> None:
    day, total = "2026-11-22", "total"
    settles = [
        Settle("c:a", "stl_1", tokens=7, cost_nanos=3, periods=(day, total), endpoint="chat"),
        Settle("c:a", "stl_2", tokens=5, cost_nanos=11, periods=(total,), endpoint="embeddings"),
        Settle("c:a", "stl_3", tokens=2, cost_nanos=0, periods=(day, total), endpoint="chat"),
        Settle("c:a", "stl_4", tokens=1, cost_nanos=1, periods=(day, total)),  # none named
        Settle("c:a", "stl_5", tokens=0, cost_nanos=4, periods=(total,), endpoint="rerank"),
    ]
    assert await store.settle_all(settles) == [True] * 5
    assert await store.settle_all(settles) == [False] * 5  # a replay adds nothing, by endpoint either
    usage = await store.usage("c:a", [day, total, "2026-11-23"])
    assert (usage[day].tokens, usage[day].cost_nanos) == (10, 4)
    assert usage[day].by_endpoint == {"chat": (9, 3)}
    assert (usage[total].tokens, usage[total].cost_nanos) == (15, 19)
    assert usage[total].by_endpoint == {"chat": (9, 3), "embeddings": (5, 11), "rerank": (0, 4)}
    assert usage["2026-11-23"].by_endpoint == {}


async def test_a_settlement_with_no_counters_to_add_to_may_still_name_its_endpoint(store: Store) -> None:
    # The endpoint is the script's last argument, after one ttl per use hash: none here.
    assert await store.settle(Settle("c:a", "stl_1", tokens=3, record=record(1), endpoint="chat"))
    assert await store.records("c:a") == [record(1)]
    assert (await store.usage("c:a", ["total"]))["total"].by_endpoint == {}


async def test_records_come_back_in_order_and_from_a_time(store: Store) -> None:
    for n in range(3):
        await store.settle(Settle("c:a", f"s{n}", tokens=1, periods=("total",), record=record(n)))
    await asyncio.sleep(0.05)
    middle = time.time()
    await store.settle(Settle("c:a", "s3", tokens=1, periods=("total",), record=record(3)))
    assert await store.records("c:a") == [record(n) for n in range(4)]
    assert await store.records("c:a", since=middle - 0.01) == [record(3)]
    assert await store.records("c:b") == []


async def test_idempotency_conflict_reuse_and_replay(store: Store) -> None:
    claim = Claim("key-1", "hash-a", "stl_1")
    first = await store.acquire(Ask("c:a", claim=claim))
    assert isinstance(first, Granted)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("key-1", "hash-a", "stl_2"))), Conflict)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("key-1", "hash-b", "stl_3"))), Reused)
    stored = Stored("stl_1", 200, True, b"data: {}\n\ndata: [DONE]\n\n")
    await store.settle(Settle("c:a", "stl_1", claim_key="key-1", stored=stored, record=record(1), tokens=1))
    again = await store.acquire(Ask("c:a", claim=Claim("key-1", "hash-a", "stl_4")))
    assert isinstance(again, Replay) and again.stored == stored
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("key-1", "hash-b", "stl_5"))), Reused)
    # The key is the client's: another client's same key is a different request.
    assert isinstance(await store.acquire(Ask("c:b", claim=Claim("key-1", "hash-a", "stl_6"))), Granted)


async def test_a_claim_let_go_runs_fresh_and_only_its_owner_can_let_go(store: Store) -> None:
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_1"))), Granted)
    await store.settle(Settle("c:a", "stl_other", claim_key="k"))  # not the owner: nothing happens
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_2"))), Conflict)
    await store.settle(Settle("c:a", "stl_1", claim_key="k"))  # a failure a retry may fix: let go
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_3"))), Granted)


async def test_a_limited_request_takes_no_claim(store: Store) -> None:
    assert isinstance(await store.acquire(Ask("c:a", rpm=1)), Granted)
    refused = await store.acquire(Ask("c:a", rpm=1, claim=Claim("k", "h", "stl_1")))
    assert isinstance(refused, Limited)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_2"))), Granted)


async def test_a_claim_whose_replica_died_expires(make_store: MakeStore) -> None:
    store = make_store(lease_ttl=0.3)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_1"))), Granted)
    await asyncio.sleep(0.6)
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_2"))), Granted)


async def test_acquire_all_answers_each_ask_as_acquire_would(store: Store) -> None:
    # Scopes of different hash slots in one round trip; each ask all or nothing on its own.
    assert isinstance(await store.acquire(Ask("c:a", claim=Claim("k", "h", "stl_0"))), Granted)
    answers = await store.acquire_all(
        [
            Ask("c:a", rpm=2, claim=Claim("k", "h", "stl_1")),
            Ask("p:x/x-0", rpm=2, concurrency=1, lease="l1"),
            Ask("c:b", rpm=1),
            Ask("c:b", rpm=1),
        ]
    )
    conflict, key, *window = answers
    assert isinstance(conflict, Conflict)
    assert isinstance(key, Granted) and key.hold is not None and key.window.rpm_remaining == 1
    assert sorted(type(a).__name__ for a in window) == ["Granted", "Limited"]
    after = await store.acquire(Ask("c:a", rpm=2))
    assert isinstance(after, Granted) and after.window.rpm_remaining == 1  # the conflict took nothing
    assert isinstance(await store.acquire(Ask("p:x/x-0", concurrency=1, lease="l2")), Limited)
    assert await store.acquire_all([]) == []


async def test_settle_all_applies_each_settlement_once(store: Store) -> None:
    client = await store.acquire(Ask("c:a", concurrency=1, lease=lease()))
    key = await store.acquire(Ask("p:x/x-0", concurrency=1, lease=lease()))
    assert isinstance(client, Granted) and isinstance(key, Granted)
    both = [
        Settle("c:a", "stl_1", hold=client.hold, tokens=5, periods=("total",), record=record(1)),
        Settle("p:x/x-0", "stl_1", hold=key.hold, tokens=5, periods=("total",)),
    ]
    assert await store.settle_all(both) == [True, True]
    assert await store.settle_all(both) == [False, False]  # an outbox replay: applied once
    for scope in ("c:a", "p:x/x-0"):
        assert (await store.usage(scope, ["total"]))["total"].tokens == 5
        assert isinstance(await store.acquire(Ask(scope, concurrency=1, lease=lease())), Granted)
    assert await store.records("c:a") == [record(1)]
    assert await store.settle_all([]) == []


async def test_an_rpm_slot_given_back_can_be_used_again(store: Store) -> None:
    # A key granted alongside a client that was refused: the request never went out.
    for _ in range(2):
        assert isinstance(await store.acquire(Ask("p:x/x-0", rpm=2)), Granted)
    assert isinstance(await store.acquire(Ask("p:x/x-0", rpm=2)), Limited)
    await store.settle(Settle("p:x/x-0", "stl_1:", rpm=2, rpm_delta=-1))
    assert isinstance(await store.acquire(Ask("p:x/x-0", rpm=2)), Granted)
    assert isinstance(await store.acquire(Ask("p:x/x-0", rpm=2)), Limited)


async def test_scripts_lost_by_redis_are_loaded_again_within_one_batch(
    request: pytest.FixtureRequest, store: Store
) -> None:
    assert isinstance((await store.acquire_all([Ask("c:a", rpm=5)]))[0], Granted)  # scripts loaded
    backend = request.node.callspec.params["make_store"]
    if backend == "redis":  # as after a restart, or SCRIPT FLUSH
        with request.getfixturevalue("fresh_redis").client() as client:
            client.script_flush()
    elif backend == "cluster":
        for node in request.getfixturevalue("redis_cluster").nodes:
            with node.client() as client:
                client.script_flush()
    answers = await store.acquire_all([Ask("c:a", rpm=5), Ask("p:x/x-0", rpm=5)])
    assert [a.window.rpm_remaining for a in answers] == [3, 4]  # type: ignore[union-attr]
    assert await store.settle_all([Settle("c:a", "stl_1", tokens=1, periods=("total",))]) == [True]


async def test_connections_redis_closed_while_idle_are_opened_again_not_failed(
    fresh_redis: RedisServer,
) -> None:
    # RedisStore keeps its own idle connections (not redis-py's pool, which checks each before
    # handing it out): one that Redis closed meanwhile must be reopened, not fail its call.
    store = RedisStore(fresh_redis.url, timeout=2.0)
    asks = [Ask("c:a", rpm=1000), Ask("p:x/x-0", rpm=1000)]
    try:
        burst = await asyncio.gather(*(store.acquire_all(asks) for _ in range(20)))
        assert all(isinstance(a, Granted) for answers in burst for a in answers)
        with fresh_redis.client() as client:  # as a Redis restart or `timeout` would
            assert client.client_kill_filter(_type="normal", skipme=True) >= 1
        await asyncio.sleep(0.2)  # the closes reach this process
        burst = await asyncio.gather(*(store.acquire_all(asks) for _ in range(20)))
        assert all(isinstance(a, Granted) for answers in burst for a in answers), burst
    finally:
        await store.aclose()


async def test_redis_keys_live_as_long_as_what_they_hold(fresh_redis: RedisServer) -> None:
    # The scripts set a key's life only when it must change (each call from a script costs
    # Redis about a microsecond): counters from their period's first usage, the GCRA hash
    # when a charge moves a window later. Nothing may be left without a life, or too short.
    store = RedisStore(fresh_redis.url, timeout=2.0)
    day, month = "2026-11-22", "2026-11"
    usage = {"tokens": 5, "cost_nanos": 7, "periods": (day, month, "total")}
    try:
        with fresh_redis.client() as redis:
            for n in range(2):  # the period's first usage, then one more
                assert await store.settle(Settle("c:a", f"stl_{n}", **usage))  # type: ignore[arg-type]
                day_ms, month_ms = redis.pttl("{c:a}:use:" + day), redis.pttl("{c:a}:use:" + month)
                assert 3 * 86_400_000 - 60_000 < day_ms <= 3 * 86_400_000
                assert 400 * 86_400_000 - 60_000 < month_ms <= 400 * 86_400_000
                assert redis.pttl("{c:a}:use:total") == -1  # all time: kept for good
            assert isinstance(await store.acquire(Ask("c:a", tpm=100, tokens=10)), Granted)
            await store.settle(Settle("c:a", "stl_9", tpm=100, tpm_delta=500 - 10))  # used 500
            charged = redis.pttl("{c:a}:gcra")
            assert charged > 5 * 60_000 + 120_000 - 60_000  # past the TAT, 5 minutes ahead
            await store.settle(Settle("c:a", "stl_10", tpm=100, tpm_delta=-50))  # a refund
            assert charged - 60_000 < redis.pttl("{c:a}:gcra") <= charged
    finally:
        await store.aclose()
