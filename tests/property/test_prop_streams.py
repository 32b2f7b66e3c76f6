"""Stale-data properties: whatever the schedule of stream outages, REST outages and price
updates, no order is valued on a price older than ``trading.max_price_age``, and an order is
never refused for staleness while a young enough price is known."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import replace
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import RiskLimitError
from resilient.config import current_config
from resilient.config._price_age import PriceAgeLimits
from resilient.integration import ResilienceFactory
from resilient.testing import reset_state, use_fake_clock, zero_wait_retries
from resilient.trading import PaperBroker

SYMBOLS = ("AAPL", "BTC/USD")
LIMITS = PriceAgeLimits.parse("trading.max_price_age", {"default": 30.0, "symbols": {"*/USD": 5.0}})
_names = itertools.count()

steps = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.sampled_from(SYMBOLS), st.floats(0.0, 40.0)),  # lag
        st.tuples(st.just("advance"), st.floats(0.0, 45.0)),
        st.tuples(st.just("rest"), st.booleans()),  # REST feed up or down (starts down)
        st.tuples(st.just("read"), st.sampled_from(SYMBOLS)),
        st.tuples(st.just("order"), st.sampled_from(SYMBOLS)),
    ),
    max_size=30,
)


class Feed:
    """A REST market-data vendor: a new, unique price at every answer; can go down."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.up = False

    async def get_current_price(self, symbol: str) -> float:
        if not self.up:
            raise ConnectionRefusedError(111, "Connect call failed")
        return self.model.new_price(symbol, lag=0.0)


class Model:
    """When every price value was observed (values are unique, so a value names its origin)."""

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.observed: dict[float, tuple[str, float]] = {}  # value -> (symbol, monotonic time)
        self._values = itertools.count(1)

    def new_price(self, symbol: str, *, lag: float) -> float:
        value = 100.0 + next(self._values) / 1024  # exact in binary: no rounding collisions
        self.observed[value] = (symbol, self.clock.monotonic() - lag)
        return value

    def youngest_age(self, symbol: str) -> float | None:
        times = [t for s, t in self.observed.values() if s == symbol]
        return self.clock.monotonic() - max(times) if times else None


def config() -> Any:
    base = current_config()
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=False,
            paper_trading_enabled=True,
            risk_limits_enforced=True,
        ),
        trading=replace(base.trading, risk_check_enabled=True, max_price_age=LIMITS),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 1.0}}},
    )


@given(schedule=steps)
@examples(ci=300)
async def test_no_order_is_valued_on_a_price_older_than_max_price_age(
    schedule: list[tuple[Any, ...]],
) -> None:
    reset_state()
    with zero_wait_retries(), use_fake_clock() as clock:
        model = Model(clock)
        feed = Feed(model)
        factory = ResilienceFactory(config(), database=False, logging=False)
        n = next(_names)
        data = factory.create_resilient_market_data(feed, f"prop_data_{n}")
        broker = factory.create_resilient_broker(
            PaperBroker(lambda symbol: 100.0), f"prop_broker_{n}", paper=True
        )
        valued: list[float | None] = []
        checker = factory._context.risk
        original = checker.check

        def spy(intent: Any, *, market_price: float | None, position: float) -> Any:
            valued.append(market_price)
            return original(intent, market_price=market_price, position=position)

        checker.check = spy  # type: ignore[method-assign]
        try:
            for step in schedule:
                kind = step[0]
                if kind == "tick":
                    _, symbol, lag = step
                    value = model.new_price(symbol, lag=lag)
                    factory.record_price(symbol, value, timestamp=clock.time() - lag, source="ws")
                elif kind == "advance":
                    clock.advance(step[1])
                elif kind == "rest":
                    feed.up = step[1]
                elif kind == "read":
                    with contextlib.suppress(Exception):  # down, nothing cached / circuit open
                        await data.get_current_price(step[1])
                else:
                    symbol = step[1]
                    valued.clear()
                    limit = LIMITS.limit_for(symbol, None)
                    assert limit is not None
                    refused: RiskLimitError | None = None
                    try:
                        await broker.place_order(symbol, 0.001)
                    except RiskLimitError as exc:
                        refused = exc
                    youngest = model.youngest_age(symbol)
                    if refused is None:
                        assert valued and valued[0] is not None
                        _, seen_at = model.observed[float(valued[0])]
                        age = clock.monotonic() - seen_at
                        assert age <= limit + 1e-6, (symbol, age, limit)
                    elif refused.rule == "stale_price":
                        assert youngest is not None and youngest > limit - 1e-6, (youngest, limit)
                        assert refused.value is not None and refused.value > limit
                    else:  # nothing known at all: the order cannot be valued
                        assert youngest is None, (refused, youngest)
        finally:
            await factory.shutdown()
