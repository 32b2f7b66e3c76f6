"""Reading orders out of broker calls and supplying client order ids."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from enum import Enum
from typing import Any

import pytest

from resilient._core.wrapping import is_async_callable
from resilient.trading import prepare_order_call
from resilient.trading._methods import guess_kind, public_methods


def place_order(
    symbol: str,
    qty: float,
    side: str = "buy",
    limit_price: float | None = None,
    client_order_id: str | None = None,
) -> None:
    """A typical keyword-style broker method."""


def place_no_id(symbol: str, quantity: float, side: str) -> None:
    """A broker method without an idempotency key."""


class Side(Enum):
    BUY = "buy"
    SELL = "sell"


@dataclass
class OrderRequest:
    symbol: str
    qty: float
    side: Side
    limit_price: float | None = None
    client_order_id: str | None = None


def submit_order(order_data: OrderRequest) -> None:
    """An alpaca-style request-object method."""


def sig(fn: Any) -> inspect.Signature:
    return inspect.signature(fn)


def test_keyword_order_is_read_and_gets_a_client_id() -> None:
    """Symbol, quantity, side and price are read; a missing client order id is supplied."""
    call = prepare_order_call(
        sig(place_order), ("AAPL", 10), {"side": "sell", "limit_price": 150.0}
    )
    assert call.intent.symbol == "AAPL"
    assert call.intent.quantity == 10
    assert call.intent.side == -1
    assert call.intent.price == 150.0
    assert call.has_idempotency_key
    assert call.kwargs["client_order_id"] == call.intent.client_order_id
    assert len(call.intent.client_order_id or "") == 32


def test_callers_client_id_is_kept() -> None:
    """A client order id given by the caller is used as it is."""
    call = prepare_order_call(sig(place_order), ("AAPL", 1), {"client_order_id": "mine-1"})
    assert call.intent.client_order_id == "mine-1"
    assert call.kwargs == {"client_order_id": "mine-1"}


def test_explicit_none_client_id_is_replaced() -> None:
    """``client_order_id=None`` counts as not given."""
    call = prepare_order_call(sig(place_order), ("AAPL", 1, "buy", None, None), {})
    assert call.intent.client_order_id is not None
    bound = sig(place_order).bind(*call.args, **call.kwargs)
    assert bound.arguments["client_order_id"] == call.intent.client_order_id


def test_method_without_id_parameter_gets_none() -> None:
    """No idempotency key can be supplied when the method takes none."""
    call = prepare_order_call(sig(place_no_id), ("MSFT",), {"quantity": 5, "side": "BUY"})
    assert not call.has_idempotency_key
    assert call.kwargs == {"quantity": 5, "side": "BUY"}
    assert call.intent.quantity == 5
    assert call.intent.side == 1


def test_request_object_gets_a_copy_with_the_id() -> None:
    """An order object is copied with the id set; the caller's object is untouched."""
    request = OrderRequest("TSLA", 3, Side.SELL, limit_price=200.0)
    call = prepare_order_call(sig(submit_order), (request,), {})
    sent = call.args[0] if call.args else call.kwargs["order_data"]
    assert request.client_order_id is None
    assert sent.client_order_id == call.intent.client_order_id
    assert call.has_idempotency_key
    assert (call.intent.symbol, call.intent.quantity, call.intent.side) == ("TSLA", 3, -1)
    assert call.intent.price == 200.0


def test_dict_order() -> None:
    """A dict order is read and copied with the id."""

    def send(order: dict[str, Any]) -> None: ...

    order = {"symbol": "SPY", "quantity": "4", "action": "BUY", "clientOrderId": None}
    call = prepare_order_call(sig(send), (order,), {})
    assert call.intent.quantity == 4
    assert call.intent.side == 1
    sent = call.args[0] if call.args else call.kwargs["order"]
    assert sent["clientOrderId"] == call.intent.client_order_id
    assert order["clientOrderId"] is None


def test_negative_quantity_means_sell() -> None:
    """Without a side, the quantity's sign is the direction."""
    call = prepare_order_call(sig(place_no_id), ("X", -7, None), {})
    assert call.intent.quantity == 7
    assert call.intent.side == -1


def test_notional_order() -> None:
    """A notional amount is read when given instead of a quantity."""

    def order(symbol: str, notional: float, side: str) -> None: ...

    call = prepare_order_call(sig(order), ("AAPL", 2500.0, "buy"), {})
    assert call.intent.notional == 2500.0
    assert call.intent.quantity is None


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("place_order", "order"),
        ("submit_order", "order"),
        ("replace_order", "order"),
        ("close_position", "order"),
        ("buy", "order"),
        ("cancel_order", "cancel"),
        ("cancel_all_orders", "cancel"),
        ("get_account_info", "read"),
        ("get_bars", "read"),
        ("list_positions", "read"),
        ("get_orders", "read"),
        ("connect", "other"),
    ],
)
def test_method_kinds(name: str, kind: str) -> None:
    """Method names map to read / order / cancel, other names to the default."""
    assert guess_kind(name, default="other") == kind


def test_public_methods_and_async_detection() -> None:
    """Public methods are found, private ones and properties skipped; async is detected."""

    class Client:
        @property
        def status(self) -> str:
            raise AssertionError("properties must not be evaluated")

        @functools.cached_property
        def session(self) -> object:
            raise AssertionError("cached properties must not be evaluated")

        def _private(self) -> None: ...

        def get_a(self) -> int:
            return 1

        async def get_b(self) -> int:
            return 2

    methods = public_methods(Client())
    assert set(methods) == {"get_a", "get_b"}
    assert not is_async_callable(methods["get_a"])
    assert is_async_callable(methods["get_b"])
