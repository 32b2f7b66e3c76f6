"""Risk limits: notional order size and resulting position, enforced or only logged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from resilient import RiskLimitError
from resilient.config import current_config
from resilient.trading import OrderIntent, PositionBook, RiskChecker


def checker(
    *,
    enabled: bool = True,
    enforced: bool = True,
    max_order: float = 10_000.0,
    max_position: float = 100_000.0,
) -> RiskChecker:
    config = current_config()
    trading = replace(
        config.trading,
        risk_check_enabled=enabled,
        max_order_size=max_order,
        max_position_size=max_position,
    )
    features = replace(config.features, risk_limits_enforced=enforced)
    return RiskChecker(trading, features)


def intent(
    qty: float | None = 10,
    side: int = 1,
    price: float | None = None,
    notional: float | None = None,
    symbol: str = "AAPL",
) -> OrderIntent:
    return OrderIntent(symbol, qty, side, price, notional, None)


def test_order_within_limits_passes() -> None:
    """An order below both limits goes ahead with its notional computed."""
    decision = checker().check(intent(qty=10, price=100.0), market_price=None, position=0)
    assert decision.notional == 1000.0
    assert decision.resulting_position == 1000.0


def test_notional_above_max_order_size_is_refused() -> None:
    """quantity × price above trading.max_order_size raises RiskLimitError naming the rule."""
    with pytest.raises(RiskLimitError) as info:
        checker().check(intent(qty=101, price=100.0), market_price=None, position=0)
    assert info.value.rule == "trading.max_order_size"
    assert info.value.limit == 10_000.0
    assert info.value.value == pytest.approx(10_100.0)
    assert "10,100.00" in str(info.value)


def test_market_order_is_valued_at_the_market_price() -> None:
    """An order without a price uses the market price."""
    with pytest.raises(RiskLimitError):
        checker().check(intent(qty=50, price=None), market_price=250.0, position=0)
    checker().check(intent(qty=39, price=None), market_price=250.0, position=0)


def test_unvalued_order_is_refused() -> None:
    """No price at all: the order cannot be valued and is refused with a hint."""
    with pytest.raises(RiskLimitError, match="no market price"):
        checker().check(intent(qty=1, price=None), market_price=None, position=0)


def test_resulting_position_above_limit_is_refused() -> None:
    """A buy that takes the position above trading.max_position_size is refused."""
    with pytest.raises(RiskLimitError) as info:
        checker().check(intent(qty=50, price=100.0), market_price=None, position=960)
    assert info.value.rule == "trading.max_position_size"


def test_reducing_a_large_position_is_allowed() -> None:
    """Selling out of an oversized position only shrinks it and passes."""
    decision = checker().check(
        intent(qty=50, side=-1, price=100.0), market_price=None, position=2000
    )
    assert decision.resulting_position == pytest.approx(195_000.0)


def test_unknown_side_assumes_growth() -> None:
    """Without a side, the check assumes the order grows the position."""
    with pytest.raises(RiskLimitError):
        checker().check(intent(qty=50, side=0, price=100.0), market_price=None, position=-960)


def test_notional_order_amount_is_checked() -> None:
    """A notional order is checked on its amount."""
    with pytest.raises(RiskLimitError):
        checker().check(intent(qty=None, notional=20_000.0), market_price=10.0, position=0)


def test_not_enforced_only_warns() -> None:
    """With features.risk_limits_enforced false the breach is reported, not refused."""
    decision = checker(enforced=False).check(
        intent(qty=1000, price=100.0), market_price=None, position=0
    )
    assert decision.warnings and "max_order_size" in decision.warnings[0]


def test_disabled_checks_nothing() -> None:
    """With trading.risk_check_enabled false there is no check."""
    decision = checker(enabled=False).check(
        intent(qty=10**9, price=1e6), market_price=None, position=0
    )
    assert decision.notional is None


def test_position_book_counts_accepted_orders() -> None:
    """The book nets buys and sells per symbol."""
    book = PositionBook()
    book.apply(intent(qty=10, side=1))
    book.apply(intent(qty=4, side=-1))
    book.apply(intent(qty=3, side=1, symbol="MSFT"))
    assert book.get("AAPL") == 6
    assert book.snapshot() == {"AAPL": 6, "MSFT": 3}
