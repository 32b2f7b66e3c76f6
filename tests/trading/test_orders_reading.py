"""Reading an order call: values at their boundaries, sides in method names, ids in ``params``."""

from __future__ import annotations

import inspect
import uuid
from typing import Any

import pytest

from resilient.trading import prepare_order_call
from resilient.trading._orders import OrderCall


def place_order(
    symbol: str,
    qty: Any = None,
    side: Any = None,
    limit_price: Any = None,
    notional: Any = None,
    client_order_id: Any = None,
) -> None:
    """A keyword-style broker method."""


def submit(*orders: Any, qty: Any = None) -> None:
    """A method taking its orders (or stray values) positionally."""


def create_order(
    symbol: str,
    type: str,
    side: str,
    amount: float,
    price: float | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """ccxt's unified ``create_order``."""


def create_market_order(symbol: str, amount: float) -> None:
    """A method whose side is only in its name (used under several names)."""


def close_position(symbol: str, qty: Any = None) -> None:
    """Closes a position: reduces exposure whatever its size."""


def read(fn: Any, *args: Any, **kwargs: Any) -> OrderCall:
    options = {k: kwargs.pop(k) for k in ("method", "params_key") if k in kwargs}
    return prepare_order_call(inspect.signature(fn), args, kwargs, **options)


# -- values that cannot be valued are shown in the refusal, cut at 40 characters ---------------


def test_a_bad_quantity_is_shown_in_full_up_to_forty_characters() -> None:
    value = "x" * 38  # repr is exactly 40 characters
    assert len(repr(value)) == 40
    problem = read(place_order, "AAPL", value, "buy").intent.problem
    assert problem is not None
    assert f"the quantity {value!r} is not a number" in problem


def test_a_longer_bad_quantity_is_cut_to_thirty_seven_characters_and_dots() -> None:
    value = "y" * 39  # repr is 41 characters
    shown = repr(value)[:37] + "..."
    problem = read(place_order, "AAPL", value, "buy").intent.problem
    assert problem is not None
    assert f"the quantity {shown} is not a number" in problem


# -- values in *args: a number there may be the size, so the order is refused ----------------


def test_a_boolean_in_args_is_not_a_hidden_size() -> None:
    intent = read(submit, True, qty=3).intent
    assert intent.problem is None
    assert intent.quantity == 3


def test_none_in_args_is_not_a_hidden_size() -> None:
    intent = read(submit, None, qty=3).intent
    assert intent.problem is None


def test_numeric_text_in_args_is_a_hidden_size() -> None:
    intent = read(submit, "5", qty=3).intent
    assert intent.problem is not None
    assert "positional *args" in intent.problem


def test_plain_text_in_args_is_not_a_hidden_size() -> None:
    intent = read(submit, "AAPL", qty=3).intent
    assert intent.problem is None


def test_a_complex_value_in_args_is_not_taken_for_a_size() -> None:
    intent = read(submit, 1j, qty=3).intent
    assert intent.problem is None


def test_an_order_object_in_args_is_read() -> None:
    intent = read(submit, {"symbol": "AAPL", "qty": 5, "side": "sell"}).intent
    assert intent.problem is None
    assert intent.symbol == "AAPL"
    assert intent.quantity == 5
    assert intent.side == -1


def test_a_call_that_does_not_bind_is_read_from_its_keywords_and_refused() -> None:
    # Too many positional values for the signature: their meaning is unknown.
    intent = read(create_market_order, "AAPL", 5, 7, 9).intent
    assert intent.problem is not None
    assert "positional *args" in intent.problem


# -- the side spelled in the method name ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "side"),
    [
        ("create_market_buy_order", 1),
        ("order_limit_buy", 1),
        ("market_order_sell", -1),
        ("create_market_sell_order", -1),
        ("create_market_order", 0),
    ],
)
def test_the_side_is_read_from_the_method_name(method: str, side: int) -> None:
    intent = read(create_market_order, "BTC/USDT", 2, method=method).intent
    assert intent.side == side
    assert intent.quantity == 2
    assert intent.problem is None


# -- sizes and prices under SDK names, including non-scalar values --------------------------------


def test_a_list_quantity_is_refused_as_not_a_number() -> None:
    problem = read(place_order, "AAPL", [1, 2], "buy").intent.problem
    assert problem is not None
    assert "the quantity [1, 2] is not a number" in problem


def test_a_list_price_is_refused_as_not_a_number() -> None:
    problem = read(place_order, "AAPL", 1, "buy", limit_price=[10]).intent.problem
    assert problem is not None
    assert "the price limit_price [10] is not a number" in problem


def test_a_uuid_client_order_id_given_by_the_caller_is_kept() -> None:
    """A caller's uuid.UUID id is its idempotency key: kept, never replaced by a fresh one."""
    given = uuid.uuid4()
    call = read(place_order, "AAPL", 1, "buy", client_order_id=given)
    assert call.kwargs["client_order_id"] == given
    assert call.intent.client_order_id == str(given)


def test_a_price_at_the_unset_threshold_means_no_price() -> None:
    intent = read(place_order, "AAPL", 1, "buy", limit_price=1e300).intent
    assert intent.price is None
    assert intent.problem is None


def test_a_price_just_below_the_unset_threshold_is_the_price() -> None:
    intent = read(place_order, "AAPL", 1, "buy", limit_price=9e299).intent
    assert intent.price == 9e299


# -- quantity and notional at zero ----------------------------------------------------------------


def test_a_zero_quantity_without_side_is_refused_and_has_no_direction() -> None:
    intent = read(place_order, "AAPL", 0).intent
    assert intent.problem is not None
    assert "the quantity 0.0 is not positive" in intent.problem
    assert intent.side == 0
    assert intent.quantity is None


def test_a_zero_quantity_with_a_side_is_refused_as_not_positive() -> None:
    intent = read(place_order, "AAPL", 0, "buy").intent
    assert intent.problem is not None
    assert "the quantity 0.0 is not positive" in intent.problem
    assert intent.quantity is None


def test_a_signed_quantity_without_side_gives_the_direction() -> None:
    intent = read(place_order, "AAPL", -3).intent
    assert intent.side == -1
    assert intent.quantity == 3
    assert intent.problem is None


def test_a_notional_below_one_is_valid() -> None:
    intent = read(place_order, "BTC/USD", side="buy", notional=0.5).intent
    assert intent.problem is None
    assert intent.notional == 0.5


def test_a_zero_notional_is_refused() -> None:
    intent = read(place_order, "BTC/USD", side="buy", notional=0).intent
    assert intent.problem is not None
    assert "the notional amount 0.0 is not positive" in intent.problem
    assert intent.notional is None


def test_an_order_without_any_size_is_refused_naming_the_fields_looked_for() -> None:
    intent = read(place_order, "AAPL", side="buy").intent
    assert intent.problem == (
        "no quantity or notional amount was found in the call "
        "(looked for qty, quantity, amount, size, notional, quote_size)"
    )


# -- closing calls ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["close_position", "close_all_positions", "liquidate_position"])
def test_a_closing_call_is_neither_valued_nor_refused(method: str) -> None:
    intent = read(close_position, "AAPL", method=method).intent
    assert intent.closing is True
    assert intent.problem is None


def test_an_opening_call_is_not_closing() -> None:
    intent = read(close_position, "AAPL", 1, method="place_order").intent
    assert intent.closing is False


# -- ccxt: the client order id goes into params --------------------------------------------------


def test_a_client_order_id_is_supplied_in_params() -> None:
    call = read(
        create_order,
        "BTC/USDT",
        "limit",
        "buy",
        0.5,
        30000,
        {"timeInForce": "GTC"},
        params_key="clientOrderId",
    )
    params = call.args[5]
    assert params["timeInForce"] == "GTC"
    assert params["clientOrderId"] == call.intent.client_order_id
    assert call.intent.client_order_id is not None
    assert call.has_idempotency_key is True
    assert call.intent.price == 30000
    assert call.intent.side == 1


def test_a_client_order_id_is_supplied_in_params_when_none_were_given() -> None:
    call = read(create_order, "BTC/USDT", "market", "sell", 1, params_key="clientOrderId")
    params = call.kwargs["params"]
    assert params == {"clientOrderId": call.intent.client_order_id}
    assert call.has_idempotency_key is True


def test_a_client_order_id_given_in_params_is_reused() -> None:
    call = read(
        create_order,
        "BTC/USDT",
        "market",
        "sell",
        1,
        params={"clientOrderId": "mine-1"},
        params_key="clientOrderId",
    )
    assert call.intent.client_order_id == "mine-1"
    assert call.kwargs["params"] == {"clientOrderId": "mine-1"}


def test_no_id_is_supplied_without_a_params_key() -> None:
    call = read(create_order, "BTC/USDT", "market", "sell", 1)
    assert call.has_idempotency_key is False
    assert call.intent.client_order_id is None
    assert "params" not in call.kwargs


def test_no_id_is_supplied_when_the_method_has_no_params() -> None:
    call = read(create_market_order, "BTC/USDT", 1, params_key="clientOrderId")
    assert call.has_idempotency_key is False
    assert call.kwargs == {}
