"""The session's PostgreSQL server; tests/conftest.py imports it so every test can ask for it.

One server per session: initdb and a start cost about two seconds. Tests stay apart by their
own database (PostgresServer.create_database) or table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg_rig import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()
