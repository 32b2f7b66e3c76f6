"""The deployment guide's "Basic Integration" and "Health Monitoring" code, as written.

Run: python examples/guide_quickstart.py
(uses the embedded defaults: a SQLite file in the working directory, the in-process cache)
"""

import asyncio
import os
import tempfile
from typing import Any

from resilient.config import ConfigManager
from resilient.integration import ResilienceFactory


class YourBroker:
    """Stands in for your broker SDK (Alpaca, Interactive Brokers, ...)."""

    paper = True  # a paper account: orders are allowed with the default switches

    async def get_account_info(self) -> dict[str, Any]:
        return {"cash": 25_000.0, "buying_power": 50_000.0}


class YourMarketData:
    """Stands in for your market-data SDK (Polygon, Alpha Vantage, ...)."""

    async def get_current_price(self, symbol: str) -> float:
        return {"AAPL": 189.5}.get(symbol, 100.0)


async def main() -> None:
    your_broker, your_market_data = YourBroker(), YourMarketData()

    # Load configuration
    config_manager = ConfigManager()
    config = config_manager.load_config()

    # Create resilience factory
    factory = ResilienceFactory(config)
    await factory.initialize_resilience()

    # Wrap your services
    resilient_broker = factory.create_resilient_broker(your_broker, "main_broker")
    resilient_data = factory.create_resilient_market_data(your_market_data, "main_data")

    # Use resilient services
    account_info = await resilient_broker.get_account_info()
    current_price = await resilient_data.get_current_price("AAPL")
    print(f"Account: {account_info}; AAPL: {current_price}")

    # Health Monitoring
    orchestrator = factory.get_orchestrator()
    health_summary = await orchestrator.get_system_health()

    print(f"Overall Status: {health_summary['overall_status']}")
    print(f"Services: {list(health_summary['components'])}")

    # Circuit Breaker Metrics
    cb_metrics = health_summary["circuit_breakers"]
    for name, metrics in cb_metrics.items():
        print(f"Circuit {name}: {metrics['state']} (success rate: {metrics['success_rate']:.1%})")

    # Error Tracking
    error_metrics = health_summary["error_handling"]
    print(f"Total Errors: {error_metrics['total_errors']}")
    print(f"By Category: {error_metrics['by_category']}")

    assert health_summary["overall_status"] == "healthy", health_summary
    assert {"main_broker", "main_data"} <= set(health_summary["components"])
    await factory.shutdown()


if __name__ == "__main__":
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="resilient-quickstart-") as scratch:
        os.chdir(scratch)  # the embedded SQLite file lands here
        try:
            asyncio.run(main())
        finally:
            os.chdir(home)
