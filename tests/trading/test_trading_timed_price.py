"""TimedPrice as a value (age, timestamp, pickling, validation) and the ``max_age=`` keyword
of a market-data proxy's reads, sync and async."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from resilient import FakeClock, use_clock
from resilient.config import current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.trading import StaleDataError, TimedPrice


def test_age_timestamp_and_repr_follow_the_clock() -> None:
    clock = FakeClock(start=1_000.0)
    with use_clock(clock):
        price = TimedPrice(101.25, source="quotes")
        assert price == 101.25 and price.age == 0.0
        clock.advance(2.5)
        assert price.age == pytest.approx(2.5)
        assert price.timestamp == pytest.approx(clock.time() - 2.5)
        assert repr(price) == "TimedPrice(101.25, age=2.5s, source='quotes')"
        earlier = TimedPrice(99.0, timestamp=clock.time() - 10.0)
        assert earlier.age == pytest.approx(10.0)


def test_pickling_keeps_value_source_and_observation_time() -> None:
    clock = FakeClock(start=50.0)
    with use_clock(clock):
        price = TimedPrice(12.5, source="feed")
        clock.advance(3.0)
        copy = pickle.loads(pickle.dumps(price))
        assert isinstance(copy, TimedPrice)
        assert copy == 12.5 and copy.source == "feed"
        assert copy.age == pytest.approx(3.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), True])
def test_invalid_prices_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="a price must be a finite positive number"):
        TimedPrice(bad)


class _Feed:
    def __init__(self) -> None:
        self.down = False

    async def get_current_price(self, symbol: str) -> float:
        if self.down:
            raise ConnectionError("feed down")
        return 101.0

    def get_quote(self, symbol: str) -> float:
        if self.down:
            raise ConnectionError("feed down")
        return 55.0


@pytest.fixture
async def feed_proxy() -> Any:
    factory = ResilienceFactory(
        current_config(), registry=HealthRegistry(), logging=False, database=False
    )
    await factory.initialize_resilience()
    feed = _Feed()
    proxy = factory.create_resilient_market_data(feed, "ts-feed")
    yield feed, proxy
    await factory.shutdown()


@pytest.mark.parametrize("bad", [-1, "5", True, float("nan")])
async def test_max_age_must_be_seconds(feed_proxy: Any, bad: Any) -> None:
    _, proxy = feed_proxy
    with pytest.raises(ValueError, match=r"ts-feed\.get_current_price: max_age must be seconds"):
        await proxy.get_current_price("AAPL", max_age=bad)
    with pytest.raises(ValueError, match=r"ts-feed\.get_quote: max_age must be seconds"):
        proxy.get_quote("AAPL", max_age=bad)


async def test_a_fresh_answer_passes_max_age(feed_proxy: Any) -> None:
    _, proxy = feed_proxy
    assert await proxy.get_current_price("AAPL", max_age=5) == 101.0
    assert proxy.get_quote("AAPL", max_age=5.0) == 55.0
    assert await proxy.get_current_price("AAPL") == 101.0


async def test_a_cached_answer_older_than_max_age_raises(feed_proxy: Any) -> None:
    feed, proxy = feed_proxy
    clock = FakeClock()
    with use_clock(clock):
        assert proxy.get_quote("MSFT") == 55.0
        feed.down = True
        clock.advance(30.0)
        with pytest.raises(StaleDataError):
            proxy.get_quote("MSFT", max_age=1.0)
