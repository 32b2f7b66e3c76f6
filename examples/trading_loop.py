"""A small trading loop through the factory: resilient market data and broker, risk limits,
paper trading, a vendor outage served from the cache, and the health summary at the end.

Run: python examples/trading_loop.py
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import tempfile
from pathlib import Path
from typing import Any

from resilient import RiskLimitError, TradingDisabledError
from resilient.config import ConfigManager
from resilient.integration import ResilienceFactory
from resilient.trading import PaperBroker, StalePrice, last_fallback


class MarketData:
    """Your market-data SDK; it goes down between ticks 4 and 7."""

    def __init__(self) -> None:
        self.tick = 0
        self.prices = {"AAPL": 190.0, "MSFT": 410.0}

    async def get_current_price(self, symbol: str) -> float:
        if 4 <= self.tick <= 7:
            raise ConnectionError("market data feed unreachable")
        self.prices[symbol] = round(self.prices[symbol] * (1.001 if self.tick % 2 else 0.999), 2)
        return self.prices[symbol]


class LiveBroker:
    """Your live broker SDK. With the default switches (live trading off) it never sees an
    order: they go to the paper broker registered below."""

    paper = False

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []

    async def get_account_info(self) -> dict[str, Any]:
        return {"cash": 100_000.0}

    async def submit_order(
        self, symbol: str, qty: float, side: str, client_order_id: str | None = None
    ) -> dict[str, Any]:
        self.orders.append({"symbol": symbol, "qty": qty})
        return self.orders[-1]


async def main(scratch: Path) -> None:
    config = ConfigManager().load_config()
    # Tighter breaker and retry timings than the defaults, so the outage plays out in seconds.
    config = dataclasses.replace(
        config,
        database=dataclasses.replace(
            config.database, host="", sqlite_path=str(scratch / "loop.db")
        ),
        resilience=dataclasses.replace(
            config.resilience,
            retry_initial_delay=0.01,
            retry_max_delay=0.05,
            circuit_breaker_timeout=0.5,
        ),
        features=dataclasses.replace(
            config.features, live_trading_enabled=False, paper_trading_enabled=True
        ),
    )
    feed, live = MarketData(), LiveBroker()
    async with ResilienceFactory(config, logging=False) as factory:
        data = factory.create_resilient_market_data(feed, "main_data")
        broker = factory.create_resilient_broker(live, "main_broker")
        try:
            await broker.submit_order("AAPL", 1, "buy")
        except TradingDisabledError as exc:
            print(f"before a paper broker is registered: {exc}")
        paper = PaperBroker(feed.get_current_price)
        factory.register_paper_broker(paper, "main_broker")

        for tick, symbol in zip(range(12), itertools.cycle(feed.prices), strict=False):
            feed.tick = tick
            price = await data.get_current_price(symbol)
            if isinstance(price, StalePrice):
                info = last_fallback()
                assert info is not None
                print(
                    f"tick {tick:2}: {symbol} {price:.2f} (cached, {price.age:.2f}s old, "
                    f"because of {info.error_type})"
                )
            else:
                print(f"tick {tick:2}: {symbol} {price:.2f}")
            if tick in (2, 9):
                order = await broker.submit_order(symbol, 10, "buy")
                print(f"         paper order {order['id']} filled at {order['filled_price']}")
            if tick == 10:
                try:
                    await broker.submit_order(symbol, 500, "buy")  # ≈ 200,000 > 10,000
                except RiskLimitError as exc:
                    print(f"         refused before the broker: {exc}")
            await asyncio.sleep(0.1)

        health = await factory.get_orchestrator().get_system_health()
        print(f"overall: {health['overall_status']}")
        for name in ("main_data", "main_broker"):
            component = health["components"][name]
            print(
                f"  {name}: {component['status']} — fallbacks served: "
                f"{component['data']['fallbacks_served']}"
            )
        assert live.orders == [], "live trading is off: the live broker must see no order"
        assert len(paper.orders) == 2
        assert health["components"]["main_data"]["data"]["fallbacks_served"] >= 1


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="resilient-loop-") as scratch:
        asyncio.run(main(Path(scratch)))
