"""The stale-price guard with risk limits not enforced (logged, not refused), for synchronous
clients, and a read that takes its own ``max_age`` argument."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from resilient import RiskLimitError, disable_logging, enable_logging
from resilient.config import Config, ConfigManager
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing import FakeClock, use_fake_clock, zero_wait_retries
from resilient.trading import PaperBroker, StalePrice


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with zero_wait_retries(), use_fake_clock() as fake:
        yield fake


def _config(tmp_path: Path, *, enforced: bool) -> Config:
    base = ConfigManager(
        "testing", cwd=tmp_path, environ={"AI_TRADER_TRADING__MAX_PRICE_AGE": "60"}
    ).load_config()
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=False,
            paper_trading_enabled=True,
            risk_limits_enforced=enforced,
        ),
        trading=replace(base.trading, risk_check_enabled=True),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 1.0}}},
    )


class _SyncFeed:
    def __init__(self) -> None:
        self.down = False
        self.bars_max_age: list[Any] = []

    def get_current_price(self, symbol: str) -> float:
        if self.down:
            raise ConnectionResetError(104, "Connection reset by peer")
        return 100.0

    def get_bars(self, symbol: str, max_age: float | None = None) -> list[float]:
        self.bars_max_age.append(max_age)
        return [1.0]


def _setup(config: Config) -> tuple[ResilienceFactory, _SyncFeed, Any, Any]:
    factory = ResilienceFactory(config, registry=HealthRegistry(), database=False, logging=False)
    feed = _SyncFeed()
    data = factory.create_resilient_market_data(feed, f"sdata_{uuid.uuid4().hex[:6]}")
    broker = factory.create_resilient_broker(
        PaperBroker(lambda symbol: 100.0), f"sbroker_{uuid.uuid4().hex[:6]}", paper=True
    )
    return factory, feed, data, broker


async def test_stale_price_refuses_a_sync_order(tmp_path: Path, clock: FakeClock) -> None:
    factory, feed, data, broker = _setup(_config(tmp_path, enforced=True))
    assert data.get_current_price("AAPL") == 100.0
    feed.down = True
    clock.advance(120)
    stale = data.get_current_price("AAPL")
    assert isinstance(stale, StalePrice)
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("AAPL", 1)
    assert info.value.rule == "stale_price"
    await factory.shutdown()


async def test_not_enforced_the_stale_price_is_logged_and_the_order_goes(
    tmp_path: Path, clock: FakeClock
) -> None:
    factory, feed, data, broker = _setup(_config(tmp_path, enforced=False))
    data.get_current_price("AAPL")
    feed.down = True
    clock.advance(120)
    data.get_current_price("AAPL")
    lines: list[str] = []
    enable_logging("WARNING", json_lines=True, sink=lines.append)
    try:
        order = await broker.place_order("AAPL", 1)
    finally:
        disable_logging()
    assert order
    messages = [json.loads(line)["message"] for line in lines]
    assert any(
        m.startswith("risk limit not enforced") and "trading.max_price_age" in m for m in messages
    )
    await factory.shutdown()


async def test_a_read_with_its_own_max_age_gets_it(tmp_path: Path) -> None:
    factory, feed, data, _ = _setup(_config(tmp_path, enforced=True))
    assert data.get_bars("AAPL", max_age=3) == [1.0]
    assert feed.bars_max_age == [3]
    await factory.shutdown()
