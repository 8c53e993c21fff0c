"""The bench's Redis cost pass (tests/bench/redis_cost.py) on a real redis-server, small.

What it states of the router: a request of the full profile (client limits and budget, key
limits and quota) is two scripts before the upstream call and two after, and it leaves its
ledger record and done markers in Redis.
"""

import os

from tests.bench import redis_cost


def test_a_request_is_four_scripts_and_leaves_its_record_behind() -> None:
    cores = set(os.sched_getaffinity(0))
    try:
        cost = redis_cost.run(None, cores, requests=redis_cost.CONCURRENCY * 30)
    finally:
        os.sched_setaffinity(0, cores)
    assert cost["requests"] == redis_cost.CONCURRENCY * 30
    assert cost["scripts"] == 4.0  # acquire x2 in one round trip, settle x2 in another
    assert 20 < cost["commands"] < 100
    assert cost["redis_us"] > 0 and cost["redis_cpu_us"] > 0  # ~150 ms of Redis CPU: 15 ticks
    assert cost["bytes_kept"] > 300  # a record of ~400 bytes, two done markers
    assert any("requests/s across all replicas" in line for line in redis_cost.lines(cost))
