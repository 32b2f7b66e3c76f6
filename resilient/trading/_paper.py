"""An in-process paper broker: orders fill immediately at the limit or the market price."""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from resilient._core.clock import get_clock

__all__ = ["PaperBroker", "PaperOrder"]

PriceSource = Callable[[str], "float | Awaitable[float]"]


@dataclass(slots=True)
class PaperOrder:
    """An order held by the :class:`PaperBroker`."""

    id: str
    client_order_id: str | None
    symbol: str
    qty: float
    side: str
    order_type: str
    limit_price: float | None
    status: str
    filled_price: float | None
    submitted_at: float

    def to_dict(self) -> dict[str, Any]:
        """The order as plain data."""
        return asdict(self)


def _positive(name: str, value: Any) -> float:
    """``value`` as a finite positive float; a NaN must never reach the positions."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be positive and finite (got {value!r})") from None
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be positive and finite (got {value!r})")
    return number


class PaperBroker:
    """A paper-trading broker for tests, demos and ``features.paper_trading_enabled``.

    Orders fill at once (market orders at ``price_source(symbol)``, limit orders at their limit).
    A repeated ``client_order_id`` returns the existing order instead of creating another one, as
    real brokers' idempotency keys do.

    Args:
        price_source: ``f(symbol) -> price`` (sync or async); required for market orders.
        cash: starting cash.
    """

    paper = True

    def __init__(self, price_source: PriceSource | None = None, *, cash: float = 100_000.0) -> None:
        self._price_source = price_source
        self.cash = cash
        self.orders: dict[str, PaperOrder] = {}
        self.positions: dict[str, float] = {}
        self._by_client_id: dict[str, str] = {}
        self._ids = itertools.count(1)

    async def _price(self, symbol: str) -> float:
        if self._price_source is None:
            raise ValueError(
                f"no price for {symbol!r}: give PaperBroker a price_source or use a limit price"
            )
        value = self._price_source(symbol)
        if isinstance(value, Awaitable):
            value = await value
        return float(value)

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        order_type: str = "market",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        """Place an order; it fills at once. Returns the order as a dict."""
        if client_order_id is not None and not client_order_id.strip():
            client_order_id = None  # a blank id is no id (as at real brokers)
        if client_order_id is not None and client_order_id in self._by_client_id:
            return self.orders[self._by_client_id[client_order_id]].to_dict()
        qty = _positive("qty", qty)
        if side not in ("buy", "sell"):
            raise ValueError(f"side must be 'buy' or 'sell' (got {side!r})")
        if limit_price is not None:
            limit_price = _positive("limit_price", limit_price)
        price = limit_price if limit_price is not None else await self._price(symbol)
        price = _positive(f"the price of {symbol!r}", price)
        order = PaperOrder(
            id=f"paper-{next(self._ids)}",
            client_order_id=client_order_id,
            symbol=symbol,
            qty=qty,
            side=side,
            order_type=order_type,
            limit_price=limit_price,
            status="filled",
            filled_price=price,
            submitted_at=get_clock().time(),
        )
        self.orders[order.id] = order
        if client_order_id is not None:
            self._by_client_id[client_order_id] = order.id
        signed = qty if side == "buy" else -qty
        self.positions[symbol] = self.positions.get(symbol, 0.0) + signed
        self.cash -= signed * price
        return order.to_dict()

    submit_order = place_order  # the alpaca-style name, same signature

    async def cancel_order(self, order_id: str) -> bool:
        """Cancel an order; filled orders cannot be cancelled (returns False)."""
        order = self.orders.get(order_id)
        if order is None:
            raise KeyError(f"unknown order {order_id!r}")
        if order.status == "filled":
            return False
        order.status = "canceled"
        return True

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """One order as a dict."""
        return self.orders[order_id].to_dict()

    async def get_orders(self) -> list[dict[str, Any]]:
        """Every order as dicts, oldest first."""
        return [order.to_dict() for order in self.orders.values()]

    async def get_position(self, symbol: str) -> float:
        """The signed quantity held in ``symbol``."""
        return self.positions.get(symbol, 0.0)

    async def get_positions(self) -> dict[str, float]:
        """Every non-zero position."""
        return {k: v for k, v in self.positions.items() if v}

    async def get_account_info(self) -> dict[str, Any]:
        """Cash and the number of orders."""
        return {"cash": self.cash, "orders": len(self.orders), "paper": True}
