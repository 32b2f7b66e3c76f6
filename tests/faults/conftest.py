"""Throwaway servers for the fault tests: each module gets its own PostgreSQL / Redis, so a
test may stop, crash or black-hole them without touching the shared servers."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator

import pytest

from resilient._backends.redis import close_workers
from resilient.testing.servers import PostgresServer, RedisServer, postgres_server, redis_server


def _need(binary: str, what: str) -> None:
    if shutil.which(binary) is None and not glob.glob(f"/usr/lib/postgresql/*/bin/{binary}"):
        message = f"{what} binaries are not installed ({binary})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL cluster on a free port (destroyed after the module)."""
    _need("initdb", "PostgreSQL server")
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="module")
def redis_srv() -> Iterator[RedisServer]:
    """A private redis-server on a free port (destroyed after the module)."""
    _need("redis-server", "Redis server")
    with redis_server() as server:
        yield server


@pytest.fixture(autouse=True)
def _close_redis_workers() -> Iterator[None]:
    yield
    close_workers()
