"""In the ``reducing`` trading state an order goes through only when it reduces the position
the broker reports, whatever shape the broker gives it (a number, a mapping, an SDK object
with a ``side``, a 404 for "none held")."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from resilient import TradingDisabledError
from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


def _config() -> Config:
    base = current_config()
    return replace(
        base,
        features=replace(base.features, live_trading_enabled=True, risk_limits_enforced=True),
        trading=replace(base.trading, risk_check_enabled=False),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": {"rate_limit": "", "timeout": 1.0}}},
    )


class _Side:
    def __init__(self, value: str) -> None:
        self.value = value


class _Position:
    def __init__(self, qty: str, side: str) -> None:
        self.qty = qty
        self.side = _Side(side)


class _NotFound(Exception):
    status_code = 404


class _Broker:
    def __init__(self, position: Any) -> None:
        self.position = position
        self.orders: list[tuple[str, float, str]] = []

    def get_open_position(self, symbol: str) -> Any:
        if isinstance(self.position, Exception):
            raise self.position
        return self.position

    def submit_order(self, symbol: str, qty: float, side: str) -> dict[str, Any]:
        self.orders.append((symbol, qty, side))
        return {"id": f"o-{len(self.orders)}", "symbol": symbol, "qty": qty, "side": side}


def _proxy(position: Any) -> tuple[_Broker, Any, ResilienceFactory]:
    factory = ResilienceFactory(_config(), registry=HealthRegistry(), logging=False, database=False)
    broker = _Broker(position)
    proxy = factory.create_resilient_broker(broker, "reduce-svc", paper=False)
    factory.set_trading_state("reducing")
    return broker, proxy, factory


@pytest.mark.parametrize(
    ("position", "allowed", "refused"),
    [
        (10, "sell", "buy"),
        ("10", "sell", "buy"),
        ({"qty": "10", "side": "long"}, "sell", "buy"),
        ({"quantity": 4, "side": "short"}, "buy", "sell"),
        (_Position("3", "short"), "buy", "sell"),
        ({"size": "-2"}, "buy", "sell"),
    ],
)
async def test_orders_that_reduce_the_reported_position_pass(
    position: Any, allowed: str, refused: str
) -> None:
    broker, proxy, factory = _proxy(position)
    await factory.initialize_resilience()
    try:
        assert proxy.submit_order("AAPL", 1, allowed)["side"] == allowed
        with pytest.raises(TradingDisabledError, match="'reducing'"):
            proxy.submit_order("AAPL", 1, refused)
    finally:
        await factory.shutdown()
    assert broker.orders == [("AAPL", 1, allowed)]


@pytest.mark.parametrize("position", [_NotFound("no position"), None, "n/a", float("nan")])
async def test_no_known_position_refuses_every_opening_order(position: Any) -> None:
    broker, proxy, factory = _proxy(position)
    await factory.initialize_resilience()
    try:
        for side in ("buy", "sell"):
            with pytest.raises(TradingDisabledError):
                proxy.submit_order("AAPL", 1, side)
    finally:
        await factory.shutdown()
    assert broker.orders == []
