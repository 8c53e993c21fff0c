"""The Redis test rig itself: real servers answer, die when told, come back on the same port, and cluster."""

from __future__ import annotations

import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster as ClusterClient
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from tests.redis_fixtures import fresh_redis, redis_cluster, redis_server  # noqa: F401
from tests.redis_rig import SLOT_RANGES, RedisCluster, RedisServer


def _key_per_range(prefix: str) -> dict[int, str]:
    """Index of each slot range (= node) -> a key hashing into it."""
    keys: dict[int, str] = {}
    i = 0
    while len(keys) < len(SLOT_RANGES):
        key = f"{prefix}-{i}"
        slot = key_slot(key.encode())
        for index, (first, last) in enumerate(SLOT_RANGES):
            if first <= slot <= last:
                keys.setdefault(index, key)
        i += 1
    return keys


def _node_ids(cluster: RedisCluster) -> list[str]:
    ids = []
    for node in cluster.nodes:
        with node.client() as client:
            ids.append(str(client.execute_command("CLUSTER", "MYID")))
    return ids


def test_server_answers_set_and_get(fresh_redis: RedisServer) -> None:  # noqa: F811
    assert fresh_redis.url == f"redis://127.0.0.1:{fresh_redis.port}/0"
    with redis.Redis.from_url(fresh_redis.url, decode_responses=True) as client:
        assert client.set("greeting", "hello")
        assert client.get("greeting") == "hello"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}


def test_fresh_redis_starts_empty(fresh_redis: RedisServer) -> None:  # noqa: F811
    with fresh_redis.client() as client:
        assert client.dbsize() == 0


def test_stop_breaks_connections_and_restart_returns_on_the_same_port(
    fresh_redis: RedisServer,  # noqa: F811
) -> None:
    port, pid = fresh_redis.port, fresh_redis.pid
    with fresh_redis.client() as client:
        client.set("k", "v")
        fresh_redis.stop()
        fresh_redis.stop()  # idempotent
        assert not fresh_redis.running
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        fresh_redis.restart()
        assert fresh_redis.running and fresh_redis.port == port and fresh_redis.pid != pid
        # The same client reconnects to the same URL; persistence is off, so the data died with the process.
        assert client.get("k") is None
        assert client.set("k", "again") and client.get("k") == "again"


def test_stopped_server_is_revived_for_the_next_test(fresh_redis: RedisServer) -> None:  # noqa: F811
    fresh_redis.stop()


def test_next_test_gets_a_running_server(fresh_redis: RedisServer) -> None:  # noqa: F811
    assert fresh_redis.running
    with fresh_redis.client() as client:
        assert client.ping()


def test_cluster_takes_writes_in_every_slot_range(redis_cluster: RedisCluster) -> None:  # noqa: F811
    redis_cluster.flush()
    assert redis_cluster.url == f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}"
    keys = _key_per_range("key")
    with ClusterClient(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True) as client:
        for index, key in keys.items():
            assert client.set(key, f"value-{index}")
        for index, key in keys.items():
            assert client.get(key) == f"value-{index}"
    # Each key really lives on the master that owns its range, not on one node answering for all.
    for index, port in enumerate(redis_cluster.ports):
        with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
            assert node.get(keys[index]) == f"value-{index}"
            assert node.dbsize() == 1


def test_cluster_runs_lua_over_keys_sharing_a_hash_tag(redis_cluster: RedisCluster) -> None:  # noqa: F811
    redis_cluster.flush()
    script = """
        redis.call('SET', KEYS[1], ARGV[1])
        redis.call('INCRBY', KEYS[2], ARGV[2])
        return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
    """
    with ClusterClient(host="127.0.0.1", port=redis_cluster.ports[0], decode_responses=True) as client:
        assert client.eval(script, 2, "{c:x}:a", "{c:x}:b", "first", 5) == ["first", "5"]
        assert client.eval(script, 2, "{c:x}:a", "{c:x}:b", "second", 5) == ["second", "10"]
        assert client.mget("{c:x}:a", "{c:x}:b") == ["second", "10"]


def test_cluster_flush_empties_every_master(redis_cluster: RedisCluster) -> None:  # noqa: F811
    with ClusterClient(host="127.0.0.1", port=redis_cluster.ports[0]) as client:
        for i in range(30):
            client.set(f"flush-{i}", i)
        redis_cluster.flush()
        assert client.dbsize(target_nodes=ClusterClient.PRIMARIES) == 0


def test_cluster_with_aof_keeps_its_identity_and_data_across_stop_and_restart() -> None:
    # Its own cluster, not the session one: this one is killed, and it persists (AOF, fsync on every write).
    cluster = RedisCluster(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    try:
        ports = cluster.ports
        pids = [node.pid for node in cluster.nodes]
        ids = _node_ids(cluster)
        keys = _key_per_range("durable")
        client = ClusterClient(
            host="127.0.0.1", port=ports[0], decode_responses=True, retry=Retry(NoBackoff(), 0)
        )
        with client:
            for index, key in keys.items():
                assert client.set(key, f"value-{index}")

            cluster.stop()
            cluster.stop()  # idempotent
            assert not cluster.running
            assert not any(node.running for node in cluster.nodes)
            for node in cluster.nodes:
                # node.client() has no retries: a default redis-py 8 client backs off ~4 s per refused node.
                with pytest.raises(redis.ConnectionError), node.client() as direct:
                    direct.ping()
            with pytest.raises((RedisClusterException, redis.ConnectionError)):
                client.get(keys[0])

            started = time.monotonic()
            assert cluster.restart() is cluster
            # restart() measured ~2.1 s here (start() ~2.1 s too): a rebooted master waits Redis's fixed 2 s
            # writable delay before it reports cluster_state:ok. Bounded by CLUSTER_TIMEOUT (20 s).
            assert time.monotonic() - started < 20
            assert cluster.running
            assert cluster.ports == ports
            assert all(node.pid not in pids for node in cluster.nodes)
            assert _node_ids(cluster) == ids

            # The same cluster client reconnects; every range's key came back from its node's AOF.
            for index, key in keys.items():
                assert client.get(key) == f"value-{index}"
            for index, key in _key_per_range("after").items():
                assert client.set(key, f"new-{index}")
                assert client.get(key) == f"new-{index}"
        for index, port in enumerate(ports):
            with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as node:
                assert node.get(keys[index]) == f"value-{index}"
                assert node.dbsize() == 2
    finally:
        cluster.close()
    assert not cluster.running
