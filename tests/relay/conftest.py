"""Relay test fixtures: one real PostgreSQL server for the session, a fresh database per test."""

from __future__ import annotations

import pytest
from pghelp import SKIP_REASON, PgServer, find_bin_dir


@pytest.fixture(scope="session")
def pg_server():
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(SKIP_REASON)
    server = PgServer(bin_dir)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server):
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)
