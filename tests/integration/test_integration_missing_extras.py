"""A factory configured for PostgreSQL and Redis on an install without their drivers starts
anyway: each missing piece is a health component saying which extra to install."""

from __future__ import annotations

import dataclasses
import sys

import pytest

from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


def _config() -> Config:
    base = current_config()
    return dataclasses.replace(
        base,
        database=dataclasses.replace(base.database, host="127.0.0.1", port=5432, name="test"),
        redis=dataclasses.replace(base.redis, url="redis://127.0.0.1:6379/15"),
        resilience=dataclasses.replace(base.resilience, circuit_breaker_shared=True),
    )


async def test_missing_drivers_degrade_with_the_extra_to_install() -> None:
    registry = HealthRegistry()
    factory = ResilienceFactory(_config(), registry=registry, logging=False)
    with pytest.MonkeyPatch.context() as mp:
        for name in [m for m in sys.modules if m.split(".")[0] in ("redis", "asyncpg")]:
            mp.setitem(sys.modules, name, None)
        mp.setitem(sys.modules, "asyncpg", None)
        report = await factory.initialize_resilience()
    try:
        components = report["components"]
        database = components["database"]
        assert database["status"] == "unhealthy"
        assert 'pip install "resilient[db]"' in database["detail"]
        cache = components["cache"]
        assert cache["status"] == "degraded"
        assert "resilient[redis]" in cache["detail"]
        assert components["shared_state"]["status"] == "degraded"
        assert report["overall_status"] == "unhealthy"
        with pytest.raises(RuntimeError, match="see the 'database' health component"):
            _ = factory.database
    finally:
        await factory.shutdown()
    assert not {"database", "cache", "shared_state"} & set(registry.names())
