"""Trading states, the position book and the stale-price guard of the risk check, pinned at
their boundaries (the cases mutation testing showed no test held)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from resilient import RiskLimitError, TradingDisabledError, get_clock
from resilient.config import current_config
from resilient.trading._freshness import TimedPrice
from resilient.trading._orders import OrderIntent
from resilient.trading._risk import (
    PositionBook,
    RiskChecker,
    check_trading_state,
    refuse_unvaluable,
)


def order(
    qty: float | None = 5.0,
    side: int = -1,
    *,
    symbol: str | None = "AAPL",
    closing: bool = False,
    problem: str | None = None,
) -> OrderIntent:
    return OrderIntent(symbol, qty, side, None, None, None, problem=problem, closing=closing)


# --- trading.state -------------------------------------------------------------------------


@pytest.mark.parametrize("position", [-10.0, 0.0, 10.0])
def test_active_lets_everything_through(position: float) -> None:
    check_trading_state("active", order(side=1), position)
    check_trading_state("active", None, position)


def test_halted_refuses_orders_and_undeclared_methods() -> None:
    for intent in (order(side=-1), None, order(closing=True)):
        with pytest.raises(TradingDisabledError, match="only cancels go through"):
            check_trading_state("halted", intent, 10.0)


@pytest.mark.parametrize(
    ("qty", "side", "position"),
    [
        (5.0, -1, 10.0),  # sell part of a long
        (10.0, -1, 10.0),  # sell all of it: exactly the position
        (10.0 + 1e-10, -1, 10.0),  # within the rounding tolerance
        (5.0, 1, -10.0),  # buy back part of a short
        (1.0, 1, -1.0),  # buy back a short of exactly one unit
        (0.5, 1, -0.5),  # a fractional short
        (0.5, -1, 0.5),  # a fractional long
    ],
)
def test_reducing_lets_through_orders_that_reduce(qty: float, side: int, position: float) -> None:
    check_trading_state("reducing", order(qty, side), position)


@pytest.mark.parametrize(
    ("qty", "side", "position", "why"),
    [
        (10.5, -1, 10.0, "does not reduce"),  # would flip the position
        (5.0, 1, 10.0, "does not reduce"),  # grows a long
        (5.0, -1, -10.0, "does not reduce"),  # grows a short
        (0.5, -1, -0.5, "does not reduce"),  # grows a fractional short
        (5.0, -1, 0.0, "does not reduce"),  # no position to reduce
        (5.0, 0, 10.0, "side or quantity is unknown"),
        (None, -1, 10.0, "side or quantity is unknown"),
    ],
)
def test_reducing_refuses_orders_that_do_not_reduce(
    qty: float | None, side: int, position: float, why: str
) -> None:
    with pytest.raises(TradingDisabledError, match=why) as info:
        check_trading_state("reducing", order(qty, side), position)
    assert info.value.rule == "trading.state"
    assert "order for AAPL" in str(info.value)
    assert "'reducing'" in str(info.value)


def test_reducing_lets_closing_calls_through_and_refuses_unknown_methods() -> None:
    check_trading_state("reducing", order(None, 0, closing=True), 0.0)
    with pytest.raises(TradingDisabledError, match="a method of unknown kind"):
        check_trading_state("reducing", None, 10.0)


def test_an_order_without_a_symbol_is_named_as_such() -> None:
    with pytest.raises(TradingDisabledError, match="order for an unknown symbol"):
        check_trading_state("halted", order(symbol=None), 10.0)


def test_refuse_unvaluable_names_the_order() -> None:
    refuse_unvaluable(order())  # no problem: nothing raised
    with pytest.raises(RiskLimitError, match="AAPL cannot be valued"):
        refuse_unvaluable(order(problem="the quantity nan is not a finite number"))
    with pytest.raises(RiskLimitError, match="the order cannot be valued"):
        refuse_unvaluable(order(symbol=None, problem="no quantity"))


# --- the position book -----------------------------------------------------------------------


@pytest.mark.parametrize("qty", [math.inf, -math.inf, math.nan, -5.0, -0.5, 0.0])
def test_the_position_book_never_takes_a_size_that_is_not_finite_and_positive(qty: float) -> None:
    book = PositionBook()
    book.apply(order(qty, 1))
    assert book.get("AAPL") == 0.0
    assert book.snapshot() == {}


def test_the_position_book_nets_sides() -> None:
    book = PositionBook()
    book.apply(order(5.0, 1))
    book.apply(order(2.0, -1))
    book.apply(order(1.0, 0))  # unknown side: counted as growing the position
    assert book.get("AAPL") == 4.0


# --- the stale-price guard in the risk check --------------------------------------------------


def checker() -> RiskChecker:
    config = current_config()
    trading = replace(config.trading, risk_check_enabled=True)
    return RiskChecker(trading, replace(config.features, risk_limits_enforced=True))


@pytest.mark.parametrize("value", [100.0, 0.5])
def test_a_stale_market_price_refuses_the_order_even_with_a_limit(value: float) -> None:
    old = TimedPrice(value, at=get_clock().monotonic() - 10_000)
    intent = OrderIntent("AAPL", 1.0, 1, 200.0, None, None)
    with pytest.raises(RiskLimitError) as info:
        checker().check(intent, market_price=old, position=0.0)
    assert info.value.rule == "stale_price"
    fresh = TimedPrice(value)
    assert checker().check(intent, market_price=fresh, position=0.0).notional == 200.0
