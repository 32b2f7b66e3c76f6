"""The in-process paper broker."""

from __future__ import annotations

import pytest

from resilient.trading import PaperBroker


async def test_orders_fill_and_move_positions_and_cash() -> None:
    """Market orders fill at the price source, limit orders at their limit."""
    broker = PaperBroker(lambda symbol: 100.0, cash=10_000.0)
    buy = await broker.place_order("AAPL", 10)
    sell = await broker.submit_order("AAPL", 4, "sell", "limit", limit_price=110.0)
    assert buy["status"] == sell["status"] == "filled"
    assert buy["filled_price"] == 100.0 and sell["filled_price"] == 110.0
    assert await broker.get_position("AAPL") == 6
    assert broker.cash == pytest.approx(10_000.0 - 1000.0 + 440.0)
    assert [o["id"] for o in await broker.get_orders()] == [buy["id"], sell["id"]]
    assert await broker.get_positions() == {"AAPL": 6}
    assert (await broker.get_account_info())["paper"] is True


async def test_client_order_id_is_idempotent() -> None:
    """A repeated client order id returns the first order instead of a second one."""
    broker = PaperBroker(lambda symbol: 5.0)
    first = await broker.place_order("X", 1, client_order_id="abc")
    again = await broker.place_order("X", 1, client_order_id="abc")
    assert first == again and len(broker.orders) == 1


async def test_async_price_source() -> None:
    """The price source may be a coroutine function."""

    async def price(symbol: str) -> float:
        return 42.0

    order = await PaperBroker(price).place_order("Y", 2)
    assert order["filled_price"] == 42.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"qty": 0}, "qty must be positive"),
        ({"qty": 1, "side": "hold"}, "side must be"),
    ],
)
async def test_bad_orders_are_rejected(kwargs: dict[str, object], match: str) -> None:
    """Invalid quantity or side raise ValueError naming the field."""
    with pytest.raises(ValueError, match=match):
        await PaperBroker(lambda s: 1.0).place_order("Z", **kwargs)  # type: ignore[arg-type]


async def test_market_order_without_price_source() -> None:
    """A market order needs a price source; the error says how to give one."""
    with pytest.raises(ValueError, match="price_source"):
        await PaperBroker().place_order("Z", 1)


async def test_cancel() -> None:
    """Filled orders cannot be cancelled; unknown ids raise KeyError."""
    broker = PaperBroker(lambda s: 1.0)
    order = await broker.place_order("Z", 1)
    assert await broker.cancel_order(order["id"]) is False
    with pytest.raises(KeyError):
        await broker.cancel_order("nope")
