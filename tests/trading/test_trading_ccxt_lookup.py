"""A ccxt exchange whose order answers are lost: the proxy retries with one client order id
and then finds the order by it among the open, then closed orders (ccxt has no look-up by
client id), sync and async."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing import zero_wait_retries


def _config() -> Config:
    base = current_config()
    return replace(
        base,
        features=replace(base.features, live_trading_enabled=True),
        trading=replace(base.trading, risk_check_enabled=False),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 2.0}}},
    )


class Exchange:
    """ccxt-shaped: ``has`` flags, ``create_order`` reading ``params["clientOrderId"]``."""

    id = "binance"
    paper = False

    def __init__(self, closed: bool) -> None:
        self.has = {"fetchOpenOrders": True, "fetchClosedOrders": True}
        self.options: dict[str, Any] = {}
        self.closed = closed
        self.book: list[dict[str, Any]] = []
        self.creates = 0

    def _place(self, symbol: str, side: str, amount: float, params: dict[str, Any]) -> None:
        self.creates += 1
        cid = params.get("clientOrderId")
        self.book.append({"id": "x-1", "clientOrderId": cid, "symbol": symbol, "status": "open"})
        raise ConnectionResetError(104, "Connection reset by peer")  # the answer is lost

    def _open(self) -> list[dict[str, Any]]:
        return [] if self.closed else list(self.book)

    def _closed(self) -> list[dict[str, Any]]:
        return list(self.book) if self.closed else []


class SyncExchange(Exchange):
    def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._place(symbol, side, amount, params or {})
        return {}

    def fetch_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self._open()

    def fetch_closed_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self._closed()


class AsyncExchange(Exchange):
    async def create_order(
        self,
        symbol: str,
        type: str,
        side: str,
        amount: float,
        price: Any = None,
        params: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self._place(symbol, side, amount, params or {})
        return {}

    async def fetch_open_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self._open()

    async def fetch_closed_orders(self, symbol: str | None = None) -> list[dict[str, Any]]:
        return self._closed()


SyncExchange.__module__ = "ccxt.binance"
AsyncExchange.__module__ = "ccxt.async_support.binance"


@pytest.mark.parametrize("closed", [False, True])
async def test_async_exchange_order_found_after_a_lost_answer(closed: bool) -> None:
    factory = ResilienceFactory(_config(), registry=HealthRegistry(), logging=False, database=False)
    exchange = AsyncExchange(closed)
    proxy = factory.create_resilient_broker(exchange, "ccxt-async")
    with zero_wait_retries():
        order = await proxy.create_order("BTC/USDT", "limit", "buy", 1, 100.0)
    assert order["id"] == "x-1" and order["clientOrderId"]
    # every attempt carried the same client order id, and the answer came from the look-up
    assert {o["clientOrderId"] for o in exchange.book} == {order["clientOrderId"]}
    await factory.shutdown()


@pytest.mark.parametrize("closed", [False, True])
def test_sync_exchange_order_found_after_a_lost_answer(closed: bool) -> None:
    factory = ResilienceFactory(_config(), registry=HealthRegistry(), logging=False, database=False)
    exchange = SyncExchange(closed)
    proxy = factory.create_resilient_broker(exchange, "ccxt-sync")
    with zero_wait_retries():
        order = proxy.create_order("BTC/USDT", "limit", "buy", 1, 100.0)
    assert order["id"] == "x-1" and order["clientOrderId"]
    assert {o["clientOrderId"] for o in exchange.book} == {order["clientOrderId"]}
