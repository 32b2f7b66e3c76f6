"""Shared fixtures: real PostgreSQL and Redis (fail in CI when absent), hypothesis profiles."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("AI_TRADER_ENV", "testing")

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if IN_CI else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_server(what: str, host: str, port: int) -> None:
    """Skip (or, when CI=true, fail) a test whose server is not reachable."""
    if _reachable(host, port):
        return
    message = f"{what} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; CI must run the {what} tests (start the server, see .ci/run)")
    pytest.skip(f"{message}; start it to run this test (CI fails instead of skipping)")


@pytest.fixture
def pg_url() -> str:
    """SQLAlchemy URL of the shared PostgreSQL test database."""
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{PG_PORT}/test"


@pytest.fixture
def redis_url() -> str:
    """URL of the shared Redis server (database 15, flushed by the tests that write to it)."""
    require_server("Redis", REDIS_HOST, REDIS_PORT)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/15"


@pytest.fixture(autouse=True)
def _isolated_state() -> Iterator[None]:
    """Every test starts with fresh breakers, health registry, error counts and metrics."""
    from resilient.testing import isolated_state

    with isolated_state():
        yield
