"""With live trading off and paper trading on, orders of a broker proxy go to the registered
paper broker whatever the mix of sync and async: an async client with a sync paper broker,
a sync client with an async one (called with and without a running event loop)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


def _config() -> Config:
    base = current_config()
    return replace(
        base,
        features=replace(base.features, live_trading_enabled=False, paper_trading_enabled=True),
        trading=replace(base.trading, risk_check_enabled=False),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 2.0}}},
    )


def _factory() -> ResilienceFactory:
    return ResilienceFactory(_config(), registry=HealthRegistry(), logging=False, database=False)


class _SyncPaper:
    def __init__(self) -> None:
        self.orders: list[tuple[str, float, str]] = []

    def submit_order(self, symbol: str, qty: float, side: str) -> dict[str, Any]:
        self.orders.append((symbol, qty, side))
        return {"id": "paper-1", "status": "filled"}


class _AsyncPaper:
    def __init__(self) -> None:
        self.orders: list[tuple[str, float, str]] = []

    async def submit_order(self, symbol: str, qty: float, side: str) -> dict[str, Any]:
        self.orders.append((symbol, qty, side))
        return {"id": "apaper-1", "status": "filled"}


class _AsyncClient:
    paper = False

    def __init__(self) -> None:
        self.orders: list[Any] = []

    async def submit_order(self, symbol: str, qty: float, side: str) -> dict[str, Any]:
        self.orders.append(symbol)
        return {"id": "live"}


class _SyncClient:
    paper = False

    def __init__(self) -> None:
        self.orders: list[Any] = []

    def submit_order(self, symbol: str, qty: float, side: str) -> dict[str, Any]:
        self.orders.append(symbol)
        return {"id": "live"}


async def test_async_client_trades_on_a_sync_paper_broker() -> None:
    factory = _factory()
    client, paper = _AsyncClient(), _SyncPaper()
    broker = factory.create_resilient_broker(client, "route-a")
    factory.register_paper_broker(paper, "route-a")
    assert await broker.submit_order("AAPL", 2, "buy") == {"id": "paper-1", "status": "filled"}
    assert paper.orders == [("AAPL", 2, "buy")] and client.orders == []
    await factory.shutdown()


def test_sync_client_trades_on_an_async_paper_broker_without_a_loop() -> None:
    factory = _factory()
    client, paper = _SyncClient(), _AsyncPaper()
    broker = factory.create_resilient_broker(client, "route-s")
    factory.register_paper_broker(paper)
    assert broker.submit_order("MSFT", 1, "sell")["id"] == "apaper-1"
    assert paper.orders == [("MSFT", 1, "sell")] and client.orders == []


async def test_sync_client_trades_on_an_async_paper_broker_inside_a_loop() -> None:
    factory = _factory()
    client, paper = _SyncClient(), _AsyncPaper()
    broker = factory.create_resilient_broker(client, "route-l")
    factory.register_paper_broker(paper)
    assert broker.submit_order("MSFT", 3, "buy")["id"] == "apaper-1"
    assert paper.orders == [("MSFT", 3, "buy")] and client.orders == []
    await factory.shutdown()
