"""Risk limits and order reading at their boundaries, through the public trading API only:
exact limits, price 0, notional-only orders against the position limit, numeric and unknown
sides, and the alpaca-py request object route that inserts the client order id."""

from __future__ import annotations

import inspect
from dataclasses import replace
from enum import Enum
from typing import Any

import pytest

from resilient import RiskLimitError
from resilient.config import current_config
from resilient.trading import OrderIntent, PositionBook, RiskChecker, prepare_order_call


def checker(
    *, max_order: float = 10_000.0, max_position: float = 100_000.0, enforced: bool = True
) -> RiskChecker:
    config = current_config()
    trading = replace(
        config.trading,
        risk_check_enabled=True,
        max_order_size=max_order,
        max_position_size=max_position,
    )
    return RiskChecker(trading, replace(config.features, risk_limits_enforced=enforced))


def intent(
    qty: float | None = 10,
    side: int = 1,
    price: float | None = None,
    notional: float | None = None,
    symbol: str | None = "AAPL",
) -> OrderIntent:
    return OrderIntent(symbol, qty, side, price, notional, None)


# --- exact limits ------------------------------------------------------------------------------


def test_order_exactly_at_max_order_size_passes() -> None:
    """A notional equal to trading.max_order_size is allowed; a cent more is refused."""
    decision = checker().check(intent(qty=100, price=100.0), market_price=None, position=0)
    assert decision.notional == 10_000.0
    with pytest.raises(RiskLimitError) as info:
        checker().check(intent(qty=100, price=100.0001), market_price=None, position=0)
    assert info.value.rule == "trading.max_order_size"


def test_position_exactly_at_max_position_size_passes() -> None:
    """A buy that takes the position exactly to the limit passes; one unit more is refused."""
    c = checker(max_order=1e9)
    decision = c.check(intent(qty=50, price=100.0), market_price=None, position=950)
    assert decision.resulting_position == 100_000.0
    with pytest.raises(RiskLimitError) as info:
        c.check(intent(qty=51, price=100.0), market_price=None, position=950)
    assert info.value.rule == "trading.max_position_size"
    assert info.value.value == pytest.approx(100_100.0)


def test_flipping_to_the_same_size_does_not_grow() -> None:
    """Selling 2× an oversized long position ends at the same absolute size: not growth."""
    c = checker(max_order=1e9)
    decision = c.check(intent(qty=2200, side=-1, price=100.0), market_price=None, position=1100)
    assert decision.resulting_position == 110_000.0


# --- price 0 -------------------------------------------------------------------------------------


def test_zero_price_is_valued_at_the_market() -> None:
    """A limit price of 0 is no price: the market price values the order."""
    with pytest.raises(RiskLimitError) as info:
        checker().check(intent(qty=50, price=0.0), market_price=250.0, position=0)
    assert info.value.value == pytest.approx(12_500.0)
    decision = checker().check(intent(qty=40, price=0.0), market_price=250.0, position=0)
    assert decision.notional == 10_000.0


def test_sub_unit_price_is_a_price() -> None:
    """A limit price between 0 and 1 (a penny stock) values the order when it is the worst fill."""
    decision = checker().check(intent(qty=10_000, price=0.5), market_price=0.25, position=0)
    assert decision.notional == 5_000.0
    with pytest.raises(RiskLimitError, match="max_order_size"):  # a limit far through the market
        checker().check(intent(qty=10_000, price=0.5), market_price=300.0, position=0)


def test_zero_price_without_market_price_is_refused() -> None:
    """Price 0 and no market price: the order cannot be valued."""
    with pytest.raises(RiskLimitError, match="cannot value AAPL"):
        checker().check(intent(qty=1, price=0.0), market_price=None, position=0)


def test_unnamed_order_is_described_as_the_order() -> None:
    """Without a symbol the refusal says "the order"."""
    with pytest.raises(RiskLimitError, match="cannot value the order"):
        checker().check(intent(qty=1, symbol=None), market_price=None, position=0)


def test_notional_only_order_at_market_price_zero_is_refused() -> None:
    """A notional-only order when the market reports 0 cannot be valued against the position."""
    with pytest.raises(RiskLimitError, match="cannot value AAPL"):
        checker().check(intent(qty=None, notional=5_000.0), market_price=0.0, position=0)


def test_no_quantity_and_no_notional_is_refused() -> None:
    """An order with a price but neither quantity nor notional cannot be valued: refused."""
    with pytest.raises(RiskLimitError, match="not a finite positive number"):
        checker().check(intent(qty=None, price=100.0), market_price=None, position=0)


# --- notional-only orders against the position limit ---------------------------------------


def test_notional_only_order_counts_against_the_position_limit() -> None:
    """notional / price units are added to the position: 5,000 at 100 on 960 units is 1,010."""
    with pytest.raises(RiskLimitError) as info:
        checker(max_order=1e9).check(
            intent(qty=None, notional=5_000.0), market_price=100.0, position=960
        )
    assert info.value.rule == "trading.max_position_size"
    assert info.value.value == pytest.approx(101_000.0)


def test_negative_notional_is_refused() -> None:
    """A negative notional is not a finite positive amount: refused whatever the limits."""
    for notional in (-20_000.0, -5_000.0):
        with pytest.raises(RiskLimitError, match="not a finite positive number"):
            checker(max_order=1e9).check(
                intent(qty=None, notional=notional, side=1), market_price=100.0, position=0
            )


# --- sides ---------------------------------------------------------------------------------


def test_unknown_side_is_assumed_to_grow_a_long_position() -> None:
    """Side 0 (unknown) is never read as a sell: on a long position it grows it."""
    with pytest.raises(RiskLimitError):
        checker(max_order=1e9).check(
            intent(qty=50, side=0, price=100.0), market_price=None, position=960
        )


def test_unknown_side_is_assumed_to_grow_a_short_position() -> None:
    """Side 0 on a short position is not read as a buy either: it grows the short."""
    with pytest.raises(RiskLimitError):
        checker(max_order=1e9).check(
            intent(qty=50, side=0, price=100.0), market_price=None, position=-960
        )


def test_buy_reduces_a_short_position() -> None:
    """A buy (side +1) on a large short position shrinks it and passes."""
    decision = checker(max_order=1e9).check(
        intent(qty=50, side=1, price=100.0), market_price=None, position=-1100
    )
    assert decision.resulting_position == pytest.approx(105_000.0)


def test_sell_grows_a_short_position_to_the_limit() -> None:
    """A sell on a short position grows it and is checked."""
    c = checker(max_order=1e9)
    assert c.check(intent(qty=50, side=-1, price=100.0), market_price=None, position=-950)
    with pytest.raises(RiskLimitError):
        c.check(intent(qty=51, side=-1, price=100.0), market_price=None, position=-950)


def test_unenforced_breach_is_a_warning() -> None:
    """With features.risk_limits_enforced off a breach is returned as a warning."""
    decision = checker(enforced=False).check(
        intent(qty=200, price=100.0), market_price=None, position=0
    )
    assert decision.notional == 20_000.0
    assert len(decision.warnings) == 1 and "max_order_size" in decision.warnings[0]


# --- the position book ----------------------------------------------------------------------


def test_position_book_counts_sides_and_ignores_incomplete_orders() -> None:
    """Buys add, sells subtract, an unknown side counts as a buy; orders without symbol or
    quantity change nothing; flat positions are left out of the snapshot."""
    book = PositionBook()
    assert book.get("AAPL") == 0.0
    book.apply(intent(qty=10, side=1))
    book.apply(intent(qty=4, side=-1))
    book.apply(intent(qty=1, side=0))
    assert book.get("AAPL") == 7.0
    book.apply(intent(qty=None))
    book.apply(intent(qty=5, symbol=None))
    assert book.snapshot() == {"AAPL": 7.0}
    book.apply(intent(qty=7, side=-1))
    assert book.snapshot() == {}


# --- reading orders: numeric and unknown sides, the pydantic route ---------------------------


def _submit_order(order_data: Any) -> None: ...


def _place(
    symbol: str, qty: float, side: Any = None, client_order_id: str | None = None
) -> None: ...


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


class Direction(Enum):
    """Member names that say nothing: only the values do."""

    A = "buy"
    B = "sell"


class Lots(Enum):
    FIVE = 5


@pytest.mark.parametrize(
    ("side", "qty", "expected"),
    [
        (1, 5, 1),
        (-1, 5, -1),
        (0, 5, 0),
        (2.5, 5, 1),
        (-0.1, 5, -1),
        ("BUY", 5, 1),
        ("sell_short", 5, -1),
        ("cover", 5, 1),
        ("hold", 5, 0),
        (Side.SELL, 5, -1),
        (Direction.A, 5, 1),
        (Direction.B, 5, -1),
        (None, 5, 0),
        (None, -5, -1),
        (None, 0.5, 0),
        (None, -0.5, -1),
        (True, 5, 0),
    ],
)
def test_sides_are_read(side: Any, qty: float, expected: int) -> None:
    """Numeric, text, enum and missing sides; with no side the quantity's sign decides;
    anything unrecognised, or an unsigned quantity with no side, is 0 (unknown: valued as the
    direction that grows the position), never a sell."""
    call = prepare_order_call(
        inspect.signature(_place), ("AAPL", qty), {"side": side} if side is not None else {}
    )
    assert call.intent.side == expected
    assert call.intent.quantity == abs(qty)


@pytest.mark.filterwarnings("ignore:websockets.legacy is deprecated:DeprecationWarning")
def test_alpaca_request_object_gets_a_client_order_id() -> None:
    """An alpaca-py MarketOrderRequest without a client order id gets one on a copy; the
    caller's object is left untouched; the intent reads symbol, quantity and side."""
    pytest.importorskip("alpaca")
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

    request = MarketOrderRequest(
        symbol="AAPL", qty=5, side=OrderSide.SELL, time_in_force=TimeInForce.DAY
    )
    call = prepare_order_call(inspect.signature(_submit_order), (request,), {})
    sent = call.args[0] if call.args else call.kwargs["order_data"]
    assert request.client_order_id is None
    assert isinstance(sent, MarketOrderRequest)
    assert sent.client_order_id and sent.client_order_id == call.intent.client_order_id
    assert call.has_idempotency_key
    assert (call.intent.symbol, call.intent.quantity, call.intent.side) == ("AAPL", 5.0, -1)

    limit = LimitOrderRequest(
        symbol="MSFT",
        qty=2,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        limit_price=310.5,
        client_order_id="mine-1",
    )
    kept = prepare_order_call(inspect.signature(_submit_order), (), {"order_data": limit})
    assert kept.intent.client_order_id == "mine-1"
    assert kept.intent.price == 310.5
    assert kept.kwargs["order_data"] is limit


def test_client_order_id_parameter_is_supplied_once() -> None:
    """A method with a client_order_id parameter gets a fresh id when none is given, and keeps
    the caller's id otherwise (given as None counts as none)."""
    sig = inspect.signature(_place)
    supplied = prepare_order_call(sig, ("AAPL", 1), {"side": "buy"})
    assert supplied.has_idempotency_key and len(supplied.kwargs["client_order_id"]) == 32
    as_none = prepare_order_call(sig, ("AAPL", 1, "buy", None), {})
    assert as_none.intent.client_order_id is not None
    assert as_none.args[3] == as_none.intent.client_order_id
    kept = prepare_order_call(sig, ("AAPL", 1), {"client_order_id": "abc"})
    assert kept.intent.client_order_id == "abc" and kept.kwargs["client_order_id"] == "abc"
    off = prepare_order_call(sig, ("AAPL", 1), {}, supply_client_id=False)
    assert not off.has_idempotency_key and "client_order_id" not in off.kwargs


def test_dict_order_gets_a_client_order_id_on_a_copy() -> None:
    """A dict order's id is added to a copy, under the dict's own spelling."""
    order = {"symbol": "AAPL", "qty": "3", "side": "buy", "clientOrderId": None}
    call = prepare_order_call(inspect.signature(_submit_order), (order,), {})
    sent = call.args[0]
    assert order["clientOrderId"] is None
    assert call.has_idempotency_key
    assert sent["clientOrderId"] == call.intent.client_order_id
    assert sent["symbol"] == "AAPL"
    assert call.intent.quantity == 3.0


def test_order_without_an_id_field_gets_none() -> None:
    """An order dict without any client-id field, sent to a method without such a parameter,
    is sent as it is: no field is invented, no idempotency key claimed."""
    order = {"symbol": "AAPL", "qty": 3, "side": "buy"}
    call = prepare_order_call(inspect.signature(_submit_order), (order,), {})
    assert not call.has_idempotency_key
    assert call.args[0] == order and "client_order_id" not in call.args[0]


class CamelOrder:
    """A plain order object spelling its id in camelCase."""

    def __init__(self) -> None:
        self.symbol = "AAPL"
        self.qty = 2
        self.side = "buy"
        self.clientOrderId: str | None = None


def test_camel_case_order_object_gets_the_id_under_its_own_spelling() -> None:
    """The id is written to a copy under the object's own attribute name."""
    order = CamelOrder()
    call = prepare_order_call(inspect.signature(_submit_order), (order,), {})
    sent = call.args[0]
    assert call.has_idempotency_key
    assert sent.clientOrderId == call.intent.client_order_id
    assert order.clientOrderId is None


def _submit_kw(order: Any = None, **kwargs: Any) -> None: ...


def test_explicit_keyword_values_win_over_the_order_object() -> None:
    """A quantity passed as its own keyword argument overrides the order object's."""
    call = prepare_order_call(
        inspect.signature(_submit_kw), ({"symbol": "AAPL", "qty": 1, "side": "buy"},), {"qty": 5}
    )
    assert call.intent.quantity == 5.0


@pytest.mark.parametrize("value", ["nan", None, "abc", True])
def test_unreadable_quantity_is_none(value: Any) -> None:
    """NaN, missing, non-numeric and boolean quantities are not quantities."""
    call = prepare_order_call(None, (), {"symbol": "AAPL", "qty": value, "side": "buy"})
    assert call.intent.quantity is None


def test_enum_quantity_is_read_by_value() -> None:
    """A quantity given as an enum member is its value."""
    call = prepare_order_call(inspect.signature(_place), ("AAPL", Lots.FIVE), {"side": "buy"})
    assert call.intent.quantity == 5.0


class ReadOnlyOrder:
    """An order object whose client order id cannot be set."""

    symbol = "AAPL"
    qty = 1
    side = "buy"

    @property
    def client_order_id(self) -> None:
        return None


def test_order_object_that_refuses_the_id_has_no_idempotency_key() -> None:
    """When the id cannot be written onto the order object, the call is not treated as
    carrying an idempotency key (so it is never retried on that basis)."""
    order = ReadOnlyOrder()
    call = prepare_order_call(inspect.signature(_submit_order), (order,), {})
    assert not call.has_idempotency_key
    assert call.intent.client_order_id is None
    assert call.args[0] is order


def test_frozen_pydantic_order_gets_its_id_through_model_copy() -> None:
    """A frozen pydantic order (no attribute assignment) still gets the id on a copy."""
    from pydantic import BaseModel, ConfigDict

    class Frozen(BaseModel):
        model_config = ConfigDict(frozen=True)
        symbol: str
        qty: float
        side: str
        client_order_id: str | None = None

    order = Frozen(symbol="AAPL", qty=2, side="sell")
    call = prepare_order_call(inspect.signature(_submit_order), (order,), {})
    assert call.has_idempotency_key
    assert call.args[0].client_order_id == call.intent.client_order_id
    assert order.client_order_id is None
    assert call.intent.side == -1
