"""Redis stays bounded: with the exporter on, what a request leaves in Redis is gone once the
exporter has written its record and its done markers and stored answer have lived their
windows. A small run of tests/bench/ledger_soak.py (the 50,000-request soak is its own
command); real processes throughout, PostgreSQL as the sink.
"""

from __future__ import annotations

from tests.bench import ledger_soak
from tests.pg_rig import PostgresServer
from tests.redis_rig import RedisServer


def test_redis_memory_stays_flat_with_the_exporter_on(postgres_server: PostgresServer) -> None:
    redis = RedisServer().start()
    try:
        result = ledger_soak.run(
            1200,
            warmup=300,
            concurrency=16,
            postgres=postgres_server.create_database("soak"),
            redis=redis,
            window=1.0,
        )
    finally:
        redis.close()
    print("\n" + result.line())
    # Nothing a request leaves outlives the windows: no key more, no record left in the streams.
    assert result.keys_after <= result.keys_before and result.ledger_entries == 0, result.line()
    # Before, every request kept ~680 bytes for good (its record and two done markers). What
    # used_memory moves by otherwise (connections' buffers, the allocator) is up to ~150 KB
    # either way between two reads, so only a steady growth fails this.
    assert result.bytes_per_request < 200, result.line()
