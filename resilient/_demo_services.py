"""Simulated broker and market-data feed for ``resilient demo`` and the tests.

Their behaviour is switched by ``mode`` (the demo's fault script sets it): ``ok``, ``outage``
(the vendor answers 503 / refuses connections), ``slow`` (every other answer of the feed takes
``latency`` seconds; the broker's all do),
``rate_limited`` (one 429 with Retry-After) and, for the broker, ``lost_response`` (the order is
recorded, then the connection drops before the answer arrives).
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Mapping
from typing import Any

__all__ = ["SimulatedBroker", "SimulatedFeed", "VendorHTTPError"]


class VendorHTTPError(Exception):
    """An HTTP error answer from a simulated vendor (shaped like httpx/requests errors)."""

    def __init__(self, status_code: int, message: str, headers: Mapping[str, str] | None = None):
        self.status_code = status_code
        self.headers = dict(headers or {})
        super().__init__(f"HTTP {status_code}: {message}")


class SimulatedFeed:
    """A market-data vendor: a seeded random walk per symbol.

    Args:
        seed: seed of the price walk (same seed, same prices).
        retry_after: seconds in the Retry-After header of a 429 answer.
    """

    def __init__(self, seed: int = 7, *, retry_after: float = 0.5) -> None:
        self._rng = random.Random(seed)
        self.prices: dict[str, float] = {"AAPL": 190.0, "MSFT": 410.0, "SPY": 520.0}
        self.mode = "ok"
        self.latency = 0.5  # every other answer in "slow" mode takes this long
        self._slow_turn = False
        self.retry_after = retry_after
        self.calls = 0
        self.failures = 0

    async def _answer(self) -> None:
        self.calls += 1
        mode = self.mode
        if mode == "outage":
            self.failures += 1
            raise VendorHTTPError(503, "market data service unavailable")
        if mode == "rate_limited":
            self.mode = "ok"  # one 429, then the quota is back
            self.failures += 1
            raise VendorHTTPError(
                429, "too many requests", {"Retry-After": f"{self.retry_after:g}"}
            )
        if mode == "slow":
            self._slow_turn = not self._slow_turn
            await asyncio.sleep(self.latency if self._slow_turn else 0.02)
        else:
            await asyncio.sleep(0)

    async def get_current_price(self, symbol: str) -> float:
        """The latest trade price of ``symbol``."""
        await self._answer()
        if symbol not in self.prices:
            raise VendorHTTPError(404, f"unknown symbol {symbol!r}")
        price = self.prices[symbol] * (1 + self._rng.gauss(0, 0.002))
        self.prices[symbol] = round(price, 2)
        return self.prices[symbol]

    async def get_bars(self, symbol: str, limit: int = 5) -> list[dict[str, float]]:
        """The last ``limit`` one-minute bars of ``symbol`` (synthetic)."""
        await self._answer()
        last = self.prices.get(symbol, 100.0)
        return [{"close": round(last * (1 + self._rng.gauss(0, 0.001)), 2)} for _ in range(limit)]


class SimulatedBroker:
    """A broker that records orders, honours client order ids and can lose answers.

    It is a paper account (``paper = True``): the demo trades with the default switches
    (live trading off, paper trading on).
    """

    paper = True

    def __init__(self, feed: SimulatedFeed | None = None, *, cash: float = 100_000.0) -> None:
        self.feed = feed
        self.mode = "ok"
        self.latency = 0.5
        self.cash = cash
        self.orders: list[dict[str, Any]] = []
        self.positions: dict[str, float] = {}
        self.lost_responses = 0
        self.calls = 0
        self._ids = itertools.count(1)

    async def _connect(self) -> None:
        self.calls += 1
        if self.mode == "outage":
            raise ConnectionRefusedError(111, "Connection refused")
        if self.mode == "slow":
            await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(0)

    async def get_account_info(self) -> dict[str, Any]:
        """Cash, open positions and the number of orders."""
        await self._connect()
        return {
            "cash": round(self.cash, 2),
            "positions": dict(self.positions),
            "orders": len(self.orders),
        }

    async def get_position(self, symbol: str) -> float:
        """Signed quantity held in ``symbol``."""
        await self._connect()
        return self.positions.get(symbol, 0.0)

    async def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        """The order with that client order id, or ``None``."""
        await self._connect()
        return next((o for o in self.orders if o["client_order_id"] == client_order_id), None)

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        order_type: str = "market",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        """Place an order (filled at once). A known ``client_order_id`` returns the existing
        order instead of creating a second one."""
        await self._connect()
        if client_order_id is not None:
            for order in self.orders:
                if order["client_order_id"] == client_order_id:
                    return dict(order)
        price = limit_price
        if price is None:
            price = self.feed.prices.get(symbol, 100.0) if self.feed is not None else 100.0
        order = {
            "id": f"sim-{next(self._ids)}",
            "client_order_id": client_order_id,
            "symbol": symbol,
            "qty": qty,
            "side": side,
            "type": order_type,
            "filled_price": price,
            "status": "filled",
        }
        self.orders.append(order)
        signed = qty if side == "buy" else -qty
        self.positions[symbol] = self.positions.get(symbol, 0.0) + signed
        self.cash -= signed * price
        if self.mode == "lost_response":
            self.mode = "ok"
            self.lost_responses += 1
            raise ConnectionResetError(104, "Connection reset by peer")
        return dict(order)

    async def cancel_order(self, order_id: str) -> bool:
        """Cancel an order (filled orders cannot be cancelled: False)."""
        await self._connect()
        return not any(o["id"] == order_id and o["status"] == "filled" for o in self.orders)
