"""The factory's trading state: validated, shared through the real Redis between factories,
kept in this process (and reported) while Redis is unreachable, and reloaded from settings."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Iterator

import pytest
import redis

from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing.servers import free_port


def _config(url: str | None, prefix: str = "resilient", timeout: float = 0.2) -> Config:
    base = current_config()
    return dataclasses.replace(
        base, redis=dataclasses.replace(base.redis, url=url, key_prefix=prefix, timeout=timeout)
    )


def _factory(config: Config) -> ResilienceFactory:
    return ResilienceFactory(config, registry=HealthRegistry(), logging=False, database=False)


class _Broker:
    paper = True

    def get_account(self) -> dict[str, float]:
        return {"cash": 1.0}


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    value = f"ts-{uuid.uuid4().hex[:8]}"
    yield value
    redis.Redis.from_url(redis_url).delete(f"{value}:trading:state")


def test_an_unknown_state_is_refused() -> None:
    factory = _factory(_config(None))
    with pytest.raises(ValueError, match="is not a trading state"):
        factory.set_trading_state("paused")
    assert factory.trading_state == "active"


async def test_the_state_is_shared_between_factories(redis_url: str, prefix: str) -> None:
    config = _config(redis_url, prefix)
    one, two = _factory(config), _factory(config)
    await one.initialize_resilience()
    try:
        one.set_trading_state("reducing")
        assert one.trading_state == "reducing"
        await two.initialize_resilience()  # reads the shared state at start
        try:
            assert two.trading_state == "reducing"
            one.set_trading_state("halted")
            for _ in range(250):  # polled every 0.5 s
                if two.trading_state == "halted":
                    break
                await asyncio.sleep(0.02)
            assert two.trading_state == "halted"
        finally:
            await two.shutdown()
    finally:
        await one.shutdown()


async def test_unreachable_redis_keeps_the_state_in_this_process() -> None:
    factory = _factory(_config(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05))
    broker = factory.create_resilient_broker(_Broker(), "ts-broker")
    factory.set_trading_state("halted")
    assert factory.trading_state == "halted"
    report = await factory.registry.check_all()
    data = report.components["ts-broker"].data
    assert data["trading_state"] == "halted"
    assert "trading_state_error" in data
    assert broker.get_account() == {"cash": 1.0}  # reads still work when halted
    await factory.shutdown()
