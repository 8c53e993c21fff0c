"""Session-scoped real Redis fixtures; tests/conftest.py imports them so every test can ask for one.

One server and one cluster per session because starting them costs real time (the cluster most); tests stay
independent through fresh_redis, which empties the server and revives it if an earlier test killed it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_rig import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session (shared state: prefer fresh_redis in tests)."""
    server = RedisServer()
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A three-master Redis Cluster for the whole session."""
    cluster = RedisCluster()
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session server, running and empty. A test may stop() it; it is restarted for whoever is next."""
    if not redis_server.running:
        redis_server.restart()
    redis_server.flush()
    yield redis_server
    if not redis_server.running:
        redis_server.restart()
