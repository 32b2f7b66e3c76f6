"""The stale-data guard: no order is valued on a price older than ``trading.max_price_age``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from resilient import ConfigError, RiskLimitError
from resilient.config import Config, ConfigManager, current_config
from resilient.config._price_age import PriceAgeLimits
from resilient.integration import ResilienceFactory
from resilient.testing import FakeClock, use_fake_clock, zero_wait_retries
from resilient.trading import PaperBroker, StaleDataError, StalePrice, TimedPrice


class Feed:
    """A market-data vendor that can go down."""

    def __init__(self) -> None:
        self.prices = {"AAPL": 100.0, "BTC/USD": 50_000.0}
        self.down = False
        self.calls = 0

    async def get_current_price(self, symbol: str) -> float:
        self.calls += 1
        if self.down:
            raise ConnectionResetError(104, "Connection reset by peer")
        return self.prices[symbol]


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with zero_wait_retries(), use_fake_clock() as fake:
        yield fake


def make_config(max_price_age: Any = 60.0, **services: Any) -> Config:
    base = current_config()
    limits = PriceAgeLimits.parse("trading.max_price_age", max_price_age)
    assert isinstance(limits, PriceAgeLimits)
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=False,
            paper_trading_enabled=True,
            risk_limits_enforced=True,
        ),
        trading=replace(base.trading, risk_check_enabled=True, max_price_age=limits),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 1.0}}},
    )


def setup(config: Config) -> tuple[ResilienceFactory, Feed, Any, str]:
    factory = ResilienceFactory(config, database=False, logging=False)
    feed = Feed()
    data = factory.create_resilient_market_data(feed, f"data_{uuid.uuid4().hex[:6]}")
    broker = factory.create_resilient_broker(
        PaperBroker(lambda symbol: 100.0), f"broker_{uuid.uuid4().hex[:6]}", paper=True
    )
    return factory, feed, (data, broker), data.service_name


async def test_order_valued_on_an_old_cached_price_is_refused(clock: FakeClock) -> None:
    """The issue's example: the feed is down, the fallback serves a StalePrice two minutes
    old; a market order valued on it is refused with rule ``stale_price``."""
    factory, feed, (data, broker), _ = setup(make_config(60.0))
    assert await data.get_current_price("AAPL") == 100.0
    feed.down = True
    clock.advance(120)
    stale = await data.get_current_price("AAPL")
    assert isinstance(stale, StalePrice) and stale.age == pytest.approx(120)
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("AAPL", 1)
    assert info.value.rule == "stale_price"
    assert info.value.limit == 60.0 and info.value.value == pytest.approx(120, abs=1)
    assert "AAPL" in str(info.value) and "trading.max_price_age" in str(info.value)
    await factory.shutdown()


async def test_cached_price_within_the_age_values_the_order(clock: FakeClock) -> None:
    """A cached price younger than the limit still values an order."""
    factory, feed, (data, broker), _ = setup(make_config(60.0))
    await data.get_current_price("AAPL")
    feed.down = True
    clock.advance(30)
    order = await broker.place_order("AAPL", 1, limit_price=None)
    assert order["status"] == "filled" or order  # the paper broker took it
    await factory.shutdown()


async def test_remembered_price_does_not_become_young_again(clock: FakeClock) -> None:
    """A stale cached price that valued nothing is not laundered into a fresh one: the
    remembered price keeps its observation time."""
    factory, feed, (data, broker), _ = setup(make_config(60.0))
    await data.get_current_price("AAPL")
    feed.down = True
    clock.advance(50)
    await broker.place_order("AAPL", 1)  # 50 s: allowed, remembers the price
    clock.advance(20)  # the price is now 70 s old, whatever path serves it
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("AAPL", 1)
    assert info.value.rule == "stale_price"
    await factory.shutdown()


async def test_fresh_stream_price_values_the_order_while_rest_is_down(clock: FakeClock) -> None:
    """A price recorded from a stream (with its timestamp) values the order when the REST
    read fails or is too old."""
    factory, feed, (data, broker), _ = setup(make_config(60.0))
    await data.get_current_price("AAPL")
    feed.down = True
    clock.advance(300)
    factory.record_price("AAPL", 101.0, timestamp=clock.time() - 2.0, source="quotes")
    order = await broker.place_order("AAPL", 1)
    assert order["symbol"] == "AAPL"
    clock.advance(59)
    with pytest.raises(RiskLimitError, match="stale_price"):
        await broker.place_order("AAPL", 1)
    await factory.shutdown()


async def test_read_with_max_age_raises_instead_of_an_old_value(clock: FakeClock) -> None:
    """``max_age=`` on a read: a cached answer older than that raises StaleDataError; a
    younger one or a live one is returned."""
    factory, feed, (data, _), service = setup(make_config(60.0))
    assert await data.get_current_price("AAPL", max_age=5) == 100.0  # live
    feed.down = True
    clock.advance(3)
    assert await data.get_current_price("AAPL", max_age=5) == 100.0  # 3 s old: fine
    clock.advance(10)
    with pytest.raises(StaleDataError) as info:
        await data.get_current_price("AAPL", max_age=5)
    assert info.value.age == pytest.approx(13) and info.value.max_age == 5
    assert info.value.service == service and info.value.method == "get_current_price"
    assert "max_age" in str(info.value) and info.value.error_type in (
        "ConnectionResetError",
        "CircuitOpenError",
    )
    assert isinstance(await data.get_current_price("AAPL"), StalePrice)  # without: served
    await factory.shutdown()


async def test_limits_per_symbol_class_and_service(clock: FakeClock) -> None:
    """A symbol pattern's limit beats a service's, which beats the default."""
    limits = {"default": 60.0, "symbols": {"*/USD": 5.0}, "services": {"slow_feed": 600.0}}
    factory, feed, (data, broker), _ = setup(make_config(limits))
    await data.get_current_price("BTC/USD")
    feed.down = True
    clock.advance(10)
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("BTC/USD", 0.01)
    assert info.value.limit == 5.0
    parsed = factory.config.trading.max_price_age
    assert parsed.limit_for("AAPL", "slow_feed") == 600.0
    assert parsed.limit_for("ETH/USD", "slow_feed") == 5.0
    assert parsed.limit_for("AAPL", "other") == 60.0
    assert PriceAgeLimits.parse("k", 0).limit_for("AAPL", None) is None  # 0: no limit
    await factory.shutdown()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("max_price_age = -1", "≥ 0"),
        ('max_price_age = "soon"', "number of seconds or a table"),
        ("max_price_age = { default = 10, symbol = {} }", "did you mean symbols"),
        ('max_price_age = { symbols = { "*/USD" = "fast" } }', "max_price_age.symbols.*/USD"),
    ],
)
def test_invalid_max_price_age_is_a_config_error(toml: str, message: str, tmp_path: Any) -> None:
    """A wrong ``trading.max_price_age`` fails at load naming the key and the fix."""
    (tmp_path / "settings.toml").write_text(f"[default.trading]\n{toml}\n")
    with pytest.raises(ConfigError, match="max_price_age") as info:
        ConfigManager("testing", cwd=tmp_path, environ={}).load_config()
    assert message in str(info.value)


def test_max_price_age_table_loads(tmp_path: Any) -> None:
    """The table form loads from a settings file; a number from an environment variable."""
    (tmp_path / "settings.toml").write_text(
        '[default.trading.max_price_age]\ndefault = 20\nsymbols = { "*/USD" = 2.5 }\n'
    )
    limits = ConfigManager("testing", cwd=tmp_path, environ={}).load_config().trading.max_price_age
    assert limits.limit_for("BTC/USD", None) == 2.5 and limits.limit_for("AAPL", None) == 20
    env = {"AI_TRADER_TRADING__MAX_PRICE_AGE": "7"}
    manager = ConfigManager("testing", cwd=tmp_path, environ=env)
    assert manager.load_config().trading.max_price_age.limit_for("AAPL", None) == 7


def test_timed_price_is_a_float_with_an_age(clock: FakeClock) -> None:
    """TimedPrice behaves as a float and knows its age on the clock in force."""
    price = TimedPrice(10.5, timestamp=clock.time() - 3.0, source="quotes")
    assert price * 2 == 21.0 and price.source == "quotes"
    assert price.age == pytest.approx(3.0)
    clock.advance(2)
    assert price.age == pytest.approx(5.0)
    assert TimedPrice(1.0).age == pytest.approx(0.0)
    with pytest.raises(ValueError, match="positive"):
        TimedPrice(-1.0)


class SyncFeed:
    """A synchronous market-data SDK."""

    def __init__(self) -> None:
        self.down = False

    def get_latest_price(self, symbol: str) -> float:
        if self.down:
            raise ConnectionResetError(104, "Connection reset by peer")
        return 100.0


class SyncBroker:
    """A synchronous paper broker."""

    paper = True

    def __init__(self) -> None:
        self.orders: list[tuple[str, float]] = []

    def place_order(self, symbol: str, qty: float, client_order_id: str | None = None) -> str:
        self.orders.append((symbol, qty))
        return "ok"


async def test_sync_orders_are_guarded_too(clock: FakeClock) -> None:
    """A synchronous broker and market-data client get the same guard and ``max_age=``."""
    factory = ResilienceFactory(make_config(60.0), database=False, logging=False)
    feed, sync_broker = SyncFeed(), SyncBroker()
    data = factory.create_resilient_market_data(feed, f"sdata_{uuid.uuid4().hex[:6]}")
    broker = factory.create_resilient_broker(sync_broker, f"sbroker_{uuid.uuid4().hex[:6]}")
    assert data.get_latest_price("AAPL") == 100.0
    feed.down = True
    clock.advance(30)
    assert broker.place_order("AAPL", 1) == "ok"
    with pytest.raises(StaleDataError):
        data.get_latest_price("AAPL", max_age=10)
    clock.advance(40)
    with pytest.raises(RiskLimitError) as info:
        broker.place_order("AAPL", 1)
    assert info.value.rule == "stale_price" and len(sync_broker.orders) == 1
    await factory.shutdown()
