"""The shared stores' side of crash-consistent settlement, on a real redis-server and a real
Redis Cluster: an intent left at admission lives as long as its lease is renewed, is handed
to one recoverer once the lease has run out, and ends with its settlement; a stream bounded
by state.ledger_retention stays bounded; a long stored answer is kept compressed and replayed
byte for byte. (The whole path, with a replica SIGKILLed: tests/e2e/test_crash_settlement.py.)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from router.config import LedgerRetention
from router.state import Ask, Claim, Conflict, Granted, Intent, Replay, Settle, Stored
from router.state.redis import RedisStore
from tests.redis_rig import RedisCluster, RedisServer

MakeStore = Callable[..., RedisStore]
LEASE = 1.5


@pytest.fixture(params=["redis", "cluster"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[MakeStore]:
    made: list[RedisStore] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("fresh_redis")
        url, cluster = server.url, False
    else:
        nodes: RedisCluster = request.getfixturevalue("redis_cluster")
        nodes.flush()
        url, cluster = nodes.url.replace("+cluster", ""), True

    def make(**options: object) -> RedisStore:
        settings: dict[str, object] = {"lease_ttl": LEASE, **options}
        store = RedisStore(url, cluster=cluster, timeout=2.0, **settings)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


def intent(key: str) -> Intent:
    return Intent(key, orjson.dumps({"head": {"settlement_key": key}}))


async def test_an_intent_is_recovered_once_its_lease_runs_out_and_ends_with_its_settlement(
    make_store: MakeStore,
) -> None:
    store, other = make_store(), make_store()
    for key in ("kept", "lost", "settled"):
        assert isinstance(await store.acquire(Ask("c:a", intent=intent(key))), Granted)
    assert await store.recover("c:a", grace=0, limit=10) == []  # all within their lease
    for _ in range(4):  # "kept" is renewed past its lease's length, with what it relayed
        await asyncio.sleep(LEASE / 3)  # the keeper's pace: two renewals may be missed
        await store.renew("c:a", [], [], [("kept", 7)])
    await asyncio.sleep(LEASE / 3)
    assert await store.settle(Settle("c:a", "settled", record=b'{"n":1}', intent=True))
    # Two replicas sweep at once: each lost intent goes to one of them.
    found = await asyncio.gather(
        store.recover("c:a", grace=0, limit=10), other.recover("c:a", grace=0, limit=10)
    )
    recovered = [i for batch in found for i in batch]
    assert [(i.settlement_key, i.relayed) for i in recovered] == [("lost", -1)]
    assert orjson.loads(recovered[0].body)["head"]["settlement_key"] == "lost"
    # Settled by its recoverer: gone for good, and a second settlement of it changes nothing.
    lost = Settle("c:a", "lost", tokens=5, record=b'{"n":2}', intent=True, periods=("total",))
    assert await other.settle(lost)
    assert not await store.settle(lost)
    assert len(await store.records("c:a")) == 2
    # Once its renewals stop, the kept one is due too, with what its last renewal reported.
    await asyncio.sleep(LEASE + 0.2)
    assert [(i.settlement_key, i.relayed) for i in await store.recover("c:a", grace=0, limit=10)] == [
        ("kept", 7)
    ]


async def test_a_renewal_carries_what_was_relayed_into_the_recovered_intent(make_store: MakeStore) -> None:
    store = make_store()
    assert isinstance(await store.acquire(Ask("c:b", intent=intent("cut"))), Granted)
    await store.renew("c:b", [], [], [("cut", 12)])
    await asyncio.sleep(LEASE + 0.2)
    (found,) = await store.recover("c:b", grace=0, limit=10)
    assert (found.settlement_key, found.relayed) == ("cut", 12)
    assert await store.recover("c:b", grace=0, limit=10) == []  # leased to whoever recovers it


async def test_a_conflict_says_how_long_the_claim_has_left(make_store: MakeStore) -> None:
    store = make_store(lease_ttl=20.0)
    claim = Claim("k", "hash", "first")
    assert isinstance(await store.acquire(Ask("c:c", claim=claim)), Granted)
    conflict = await store.acquire(Ask("c:c", claim=Claim("k", "hash", "second")))
    assert isinstance(conflict, Conflict) and 19 <= conflict.retry_after <= 20


async def test_the_ledger_stream_stays_within_its_retention(make_store: MakeStore) -> None:
    store = make_store(ledger_retention=LedgerRetention(seconds=0, records=50))
    for n in range(600):
        await store.settle(Settle("c:d", f"s{n}", record=orjson.dumps({"n": n})))
    kept = await store.records("c:d")
    # "~": Redis trims whole nodes of the stream (100 entries each by default), never too much.
    assert 50 <= len(kept) <= 150
    assert orjson.loads(kept[-1]) == {"n": 599}


async def test_a_long_stored_answer_is_kept_compressed_and_replayed_as_it_was(make_store: MakeStore) -> None:
    store = make_store()
    body = b"".join(b'data: {"choices":[{"delta":{"content":"token %d"}}]}\n\n' % n for n in range(300))
    claim = Claim("long", "hash", "owner")
    assert isinstance(await store.acquire(Ask("c:e", claim=claim)), Granted)
    stored = Stored("owner", 200, True, body)
    assert await store.settle(Settle("c:e", "owner", claim_key="long", claim_hash="hash", stored=stored))
    replay = await store.acquire(Ask("c:e", claim=Claim("long", "hash", "again")))
    assert isinstance(replay, Replay) and replay.stored.body == body
