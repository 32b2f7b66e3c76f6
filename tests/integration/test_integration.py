"""The guide's integration API: ResilienceFactory, resilient broker and market data, health."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import resilient
from resilient import RiskLimitError, TradingDisabledError
from resilient._demo_services import SimulatedBroker, SimulatedFeed, VendorHTTPError
from resilient.config import Config, ConfigManager, current_config, reload_config
from resilient.integration import ResilienceFactory
from resilient.testing import reset_state, zero_wait_retries
from resilient.trading import (
    OrderStatusUnknown,
    PaperBroker,
    RateLimitExceeded,
    StalePrice,
    last_fallback,
)


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    reset_state()
    with zero_wait_retries():
        yield
    reset_state()


def make_config(
    *,
    live: bool = False,
    paper: bool = True,
    services: dict[str, Any] | None = None,
    **trading: Any,
) -> Config:
    base = current_config()
    svc = {"defaults": {"rate_limit": "", "timeout": 1.0}}
    svc.update(services or {})
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=live,
            paper_trading_enabled=paper,
            risk_limits_enforced=True,
        ),
        trading=replace(base.trading, risk_check_enabled=True, **trading),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": svc},
    )


def name() -> str:
    return f"svc_{uuid.uuid4().hex[:8]}"


async def test_guide_example_runs_as_written(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guide's Basic Integration and Health Monitoring blocks, with resilient modules."""
    monkeypatch.chdir(tmp_path)  # the embedded SQLite file lands here
    before = asyncio.all_tasks()
    config_manager = ConfigManager()
    config = config_manager.load_config()
    factory = ResilienceFactory(config)
    await factory.initialize_resilience()
    feed = SimulatedFeed()
    resilient_broker = factory.create_resilient_broker(SimulatedBroker(feed), "main_broker")
    resilient_data = factory.create_resilient_market_data(feed, "main_data")
    account_info = await resilient_broker.get_account_info()
    current_price = await resilient_data.get_current_price("AAPL")
    assert account_info["cash"] == 100_000.0
    assert current_price > 0

    orchestrator = factory.get_orchestrator()
    health_summary = await orchestrator.get_system_health()
    assert health_summary["overall_status"] == "healthy"
    assert {"main_broker", "main_data", "cache", "database"} <= set(health_summary["components"])
    assert all(c["status"] == "healthy" for c in health_summary["components"].values())
    cb_metrics = health_summary["circuit_breakers"]
    for metrics in cb_metrics.values():
        assert metrics["state"] in ("closed", "open", "half-open")
        assert 0.0 <= metrics["success_rate"] <= 1.0
    assert cb_metrics["main_data"]["total_calls"] == 1
    assert {"total_errors", "by_category"} <= set(health_summary["error_handling"])
    assert isinstance(health_summary["timestamp"], str)
    await factory.shutdown()
    assert asyncio.all_tasks() - before == set()
    assert "main_broker" not in factory.registry.names()


async def test_initialize_never_raises_for_unreachable_dependencies() -> None:
    """An unreachable PostgreSQL and Redis make components unhealthy/degraded, not errors."""
    base = make_config()
    config = replace(
        base,
        database=replace(base.database, host="127.0.0.1", port=1, connect_timeout=0.5),
        redis=replace(base.redis, url="redis://127.0.0.1:1/0", timeout=0.05),
        resilience=replace(
            base.resilience,
            health_check_enabled=True,
            health_check_interval=60.0,
            health_check_timeout=2.0,
        ),
    )
    before = asyncio.all_tasks()
    factory = ResilienceFactory(config, logging=False)
    report = await factory.initialize_resilience()
    assert report["components"]["database"]["status"] == "unhealthy"
    assert report["components"]["cache"]["status"] == "degraded"
    assert report["overall_status"] == "unhealthy"
    assert factory.get_orchestrator().running
    await factory.shutdown()
    assert not factory.get_orchestrator().running
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_embedded_sqlite_database_component(tmp_path: Any) -> None:
    """Without a database host the SQLite file is used and reported healthy."""
    base = make_config()
    config = replace(
        base, database=replace(base.database, host="", sqlite_path=str(tmp_path / "t.db"))
    )
    async with ResilienceFactory(config, logging=False) as factory:
        health = await factory.get_orchestrator().get_system_health()
        assert health["components"]["database"]["status"] == "healthy"
    assert "database" not in factory.registry.names()


class SyncClient:
    """A synchronous SDK (alpaca-py style)."""

    paper = False

    def __init__(self) -> None:
        self.fail = 0
        self.calls = 0
        self.orders: list[dict[str, Any]] = []
        self.label = "sync-client"

    def get_latest_price(self, symbol: str, *, feed: str = "iex") -> float:
        """Latest price of a symbol."""
        self.calls += 1
        if self.fail:
            self.fail -= 1
            raise ConnectionResetError("reset")
        return 101.5

    def submit_order(
        self, symbol: str, qty: float, side: str, client_order_id: str | None = None
    ) -> dict[str, Any]:
        """Submit an order."""
        self.calls += 1
        order = {"symbol": symbol, "qty": qty, "side": side, "cid": client_order_id}
        self.orders.append(order)
        return order


async def test_proxy_keeps_names_signatures_and_docstrings() -> None:
    """Every public method, sync or async, keeps its name, signature and docstring."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    broker = SimulatedBroker()
    proxy = factory.create_resilient_broker(broker, name())
    for method in ("get_account_info", "place_order", "cancel_order", "get_position"):
        original = getattr(broker, method)
        wrapped = getattr(proxy, method)
        assert wrapped.__name__ == method
        assert wrapped.__doc__ == original.__doc__
        assert inspect.signature(wrapped) == inspect.signature(original)
        assert inspect.iscoroutinefunction(wrapped)
    sync_proxy = factory.create_resilient_broker(SyncClient(), name())
    assert not inspect.iscoroutinefunction(sync_proxy.get_latest_price)
    assert inspect.signature(sync_proxy.get_latest_price) == inspect.signature(
        SyncClient.get_latest_price
    ).replace(
        parameters=list(inspect.signature(SyncClient.get_latest_price).parameters.values())[1:]
    )
    assert sync_proxy.label == "sync-client"  # plain attributes pass through
    sync_proxy.label = "renamed"
    assert sync_proxy.wrapped.label == "renamed"  # and are set on the client
    assert proxy.method_kinds["place_order"] == "order"
    assert proxy.method_kinds["cancel_order"] == "cancel"
    assert proxy.method_kinds["get_account_info"] == "read"
    await factory.shutdown()


async def test_sync_client_retries_and_serves_cached_price() -> None:
    """A sync read is retried; when it keeps failing the last good price is served with its age."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    client = SyncClient()
    svc = name()
    proxy = factory.create_resilient_market_data(client, svc)
    client.fail = 1
    assert proxy.get_latest_price("AAPL") == 101.5
    assert client.calls == 2
    client.fail = 100
    price = proxy.get_latest_price("AAPL")
    assert isinstance(price, StalePrice)
    assert price == 101.5 and price.age >= 0 and price.stale
    info = last_fallback()
    assert info is not None and info.service == svc and info.method == "get_latest_price"
    health = await proxy._health()
    assert health["status"] == "degraded"
    assert health["last_fallback"]["method"] == "get_latest_price"
    assert "age_seconds" in health["last_fallback"]
    await factory.shutdown()


async def test_no_cached_value_reraises_original_error() -> None:
    """A read that fails with nothing cached raises the vendor's own error."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    feed = SimulatedFeed()
    data = factory.create_resilient_market_data(feed, name())
    feed.mode = "outage"
    with pytest.raises(VendorHTTPError):
        await data.get_current_price("AAPL")
    assert feed.calls == current_config().resilience.retry_max_attempts
    await factory.shutdown()


async def test_one_breaker_per_service_shared_by_methods() -> None:
    """Failures of one method open the circuit for every method of the service."""
    svc = name()
    config = make_config(services={svc: {"failure_threshold": 2, "max_attempts": 1}})
    factory = ResilienceFactory(config, database=False, logging=False)
    feed = SimulatedFeed()
    data = factory.create_resilient_market_data(feed, svc)
    feed.mode = "outage"
    for _ in range(2):
        with pytest.raises(VendorHTTPError):
            await data.get_bars("AAPL")
    calls = feed.calls
    with pytest.raises(resilient.CircuitOpenError):
        await data.get_current_price("MSFT")
    assert feed.calls == calls
    assert resilient.breakers.get(svc).snapshot().state == "open"
    health = await factory.get_orchestrator().get_system_health()
    assert health["components"][svc]["status"] == "unhealthy"
    assert health["circuit_breakers"][svc]["state"] == "open"
    await factory.shutdown()


async def test_canary_switch_turns_one_service_off() -> None:
    """resilience_enabled = false: no retry, no fallback — but risk checks still apply."""
    off, on = name(), name()
    config = make_config(live=True, paper=False, services={off: {"resilience_enabled": False}})
    factory = ResilienceFactory(config, database=False, logging=False)
    feed_off, feed_on = SimulatedFeed(), SimulatedFeed()
    data_off = factory.create_resilient_market_data(feed_off, off)
    data_on = factory.create_resilient_market_data(feed_on, on)
    feed_off.mode = feed_on.mode = "outage"
    with pytest.raises(VendorHTTPError):
        await data_off.get_current_price("AAPL")
    assert feed_off.calls == 1
    with pytest.raises(VendorHTTPError):
        await data_on.get_current_price("AAPL")
    assert feed_on.calls == 3
    broker = SimulatedBroker()
    plain = factory.create_resilient_broker(broker, off)
    with pytest.raises(RiskLimitError):
        await plain.place_order("AAPL", 1000, limit_price=100.0)
    assert broker.orders == []
    await factory.shutdown()


async def test_per_method_timeout_override() -> None:
    """A method's own timeout applies to it alone."""
    svc = name()
    config = make_config(
        services={svc: {"max_attempts": 1, "methods": {"get_bars": {"timeout": 0.05}}}}
    )
    factory = ResilienceFactory(config, database=False, logging=False)
    feed = SimulatedFeed()
    feed.latency = 0.2
    data = factory.create_resilient_market_data(feed, svc)
    feed.mode = "slow"
    with pytest.raises(resilient.TimeoutError):
        await data.get_bars("AAPL")
    assert await data.get_current_price("AAPL") > 0  # 1 s timeout, 0.2 s answer
    await factory.shutdown()


async def test_live_orders_refused_with_live_trading_off() -> None:
    """Live trading off and no paper broker: refused with how to register one."""
    factory = ResilienceFactory(make_config(live=False, paper=True), database=False, logging=False)
    client = SyncClient()
    svc = name()
    broker = factory.create_resilient_broker(client, svc)
    with pytest.raises(TradingDisabledError) as info:
        broker.submit_order("AAPL", 1, "buy")
    assert "register_paper_broker" in str(info.value)
    assert client.orders == []
    paper_only = ResilienceFactory(
        make_config(live=False, paper=False), database=False, logging=False
    )
    with pytest.raises(TradingDisabledError, match="paper trading is off"):
        paper_only.create_resilient_broker(client, name()).submit_order("AAPL", 1, "buy")
    await factory.shutdown()
    await paper_only.shutdown()


async def test_orders_go_to_registered_paper_broker() -> None:
    """With paper trading on, orders (and cancels) go to the registered paper broker."""
    factory = ResilienceFactory(make_config(live=False, paper=True), database=False, logging=False)

    class LiveBroker(SimulatedBroker):
        paper = False

        def __init__(self) -> None:
            super().__init__()
            self.closed: list[str] = []

        async def close_position(self, symbol: str) -> None:
            self.closed.append(symbol)

    live = LiveBroker()
    svc = name()
    broker = factory.create_resilient_broker(live, svc)
    paper = PaperBroker(lambda symbol: 50.0)
    factory.register_paper_broker(paper, svc)
    order = await broker.place_order("AAPL", 2, limit_price=50.0)
    assert order["id"].startswith("paper-")
    assert live.orders == [] and len(paper.orders) == 1
    assert order["client_order_id"] is not None
    assert await broker.cancel_order(order["id"]) is False  # the paper broker answered
    assert await broker.get_order_by_client_order_id("x") is None  # reads: the live broker
    with pytest.raises(TradingDisabledError, match=r"has no close_position\(\) method"):
        await broker.close_position("AAPL")
    assert live.closed == []

    health = await broker._health()
    assert health["trading_mode"] == "paper" and health["orders_sent"] == 1
    await factory.shutdown()


async def test_live_trading_on_sends_to_the_broker() -> None:
    """With live trading on, orders reach the wrapped broker with a client order id."""
    factory = ResilienceFactory(make_config(live=True, paper=False), database=False, logging=False)
    client = SyncClient()
    broker = factory.create_resilient_broker(client, name())
    factory.create_resilient_market_data(client, name())
    broker.submit_order("AAPL", 3, "buy")
    assert len(client.orders) == 1 and client.orders[0]["cid"]
    await factory.shutdown()


async def test_risk_limits_use_market_price_and_broker_position() -> None:
    """Market orders are valued at the market-data price; positions come from the broker."""
    factory = ResilienceFactory(
        make_config(live=True, paper=False, max_order_size=1000.0, max_position_size=2000.0),
        database=False,
        logging=False,
    )
    feed = SimulatedFeed()
    feed.prices["AAPL"] = 100.0
    sim = SimulatedBroker(feed)
    sim.paper = False  # type: ignore[misc]
    factory.create_resilient_market_data(feed, name())
    broker = factory.create_resilient_broker(sim, name())
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("AAPL", 20)  # ≈ 2,000 > 1,000
    assert info.value.rule == "trading.max_order_size"
    sim.positions["AAPL"] = 15  # ≈ 1,500 held
    with pytest.raises(RiskLimitError) as info:
        await broker.place_order("AAPL", 8)  # 23 × ≈100 > 2,000
    assert info.value.rule == "trading.max_position_size"
    assert sim.orders == []
    await broker.place_order("AAPL", 4, "sell")
    assert len(sim.orders) == 1
    health = await broker._health()
    assert health["orders_refused"] == 2
    await factory.shutdown()


class FlakyOrders:
    """A live broker whose order endpoint fails in scripted ways."""

    paper = False

    def __init__(self, script: list[str], *, dedupe: str = "return") -> None:
        self.script = list(script)
        self.dedupe = dedupe
        self.orders: list[dict[str, Any]] = []

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        step = self.script.pop(0) if self.script else "ok"
        if step == "refused":
            raise ConnectionRefusedError("refused")
        for order in self.orders:
            if client_order_id is not None and order["cid"] == client_order_id:
                if self.dedupe == "reject":
                    raise VendorHTTPError(422, "client_order_id must be unique")
                return order
        order = {"id": len(self.orders) + 1, "cid": client_order_id, "qty": qty}
        self.orders.append(order)
        if step == "lost":
            raise ConnectionResetError("connection reset after the order was recorded")
        return order

    async def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        return next((o for o in self.orders if o["cid"] == client_order_id), None)


class NoKeyOrders(FlakyOrders):
    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",  # type: ignore[override]
        limit_price: float | None = None,
    ) -> dict[str, Any]:
        return await super().place_order(symbol, qty, side, limit_price)


@pytest.mark.parametrize(
    ("cls", "script", "outcome", "orders"),
    [
        (FlakyOrders, ["refused", "ok"], "ok", 1),
        (FlakyOrders, ["lost", "ok"], "ok", 1),
        (NoKeyOrders, ["refused", "ok"], "ok", 1),
        (NoKeyOrders, ["lost", "ok"], "error", 1),
    ],
)
async def test_order_retry_rules(
    cls: type[FlakyOrders], script: list[str], outcome: str, orders: int
) -> None:
    """Orders are retried after a proven-unsent failure, or with a client order id."""
    factory = ResilienceFactory(make_config(live=True, paper=False), database=False, logging=False)
    fake = cls(script)
    broker = factory.create_resilient_broker(fake, name())
    if outcome == "ok":
        result = await broker.place_order("AAPL", 1, limit_price=10.0)
        assert result["id"] == 1
    else:  # the answer was lost: the outcome is unknown, not a failure
        with pytest.raises(OrderStatusUnknown) as info:
            await broker.place_order("AAPL", 1, limit_price=10.0)
        assert isinstance(info.value.__cause__, ConnectionResetError)
    assert len(fake.orders) == orders
    await factory.shutdown()


async def test_duplicate_rejection_after_lost_answer_returns_the_order() -> None:
    """A broker that rejects the retried duplicate id: the proxy finds the order by its id."""
    factory = ResilienceFactory(make_config(live=True, paper=False), database=False, logging=False)
    fake = FlakyOrders(["lost", "ok"], dedupe="reject")
    broker = factory.create_resilient_broker(fake, name())
    result = await broker.place_order("AAPL", 1, limit_price=10.0)
    assert result == fake.orders[0]
    assert len(fake.orders) == 1
    await factory.shutdown()


async def test_rate_limit_usage_in_health_and_metrics() -> None:
    """API usage per service is reported in its health component and in the metrics."""
    svc = name()
    config = make_config(services={svc: {"rate_limit": "100/minute"}})
    factory = ResilienceFactory(config, database=False, logging=False)
    data = factory.create_resilient_market_data(SimulatedFeed(), svc)
    for _ in range(3):
        await data.get_current_price("AAPL")
    health = await factory.get_orchestrator().get_system_health()
    usage = health["components"][svc]["data"]["api_usage"]
    assert usage["window_used"] == 3 and usage["window_limit"] == 100
    from resilient import metrics

    text = metrics.generate_latest().decode()
    assert f'resilient_ratelimit_usage_ratio{{name="{svc}"}} 0.03' in text
    await factory.shutdown()


async def test_invalid_services_section_fails_at_start() -> None:
    """A bad services value raises ConfigError naming the key."""
    with pytest.raises(resilient.ConfigError, match=r"services\.b\.timeout"):
        ResilienceFactory(make_config(services={"b": {"timeout": -1}}), database=False)


async def test_reload_changes_trading_switches_of_running_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A configuration reload turns live trading on for proxies already created."""
    factory = ResilienceFactory(current_config(), database=False, logging=False)
    await factory.initialize_resilience()
    client = SyncClient()
    broker = factory.create_resilient_broker(client, name())
    factory.create_resilient_market_data(client, name())
    try:
        with pytest.raises(TradingDisabledError):
            broker.submit_order("AAPL", 1, "buy")
        monkeypatch.setenv("AI_TRADER_FEATURES__LIVE_TRADING_ENABLED", "true")
        monkeypatch.setenv("AI_TRADER_FEATURES__PAPER_TRADING_ENABLED", "false")
        reload_config()
        broker.submit_order("AAPL", 1, "buy")
        assert len(client.orders) == 1
    finally:
        monkeypatch.undo()
        reload_config()
        await factory.shutdown()
    assert not current_config().features.live_trading_enabled


async def test_sync_client_orders_go_to_async_paper_broker() -> None:
    """A synchronous broker SDK in paper mode trades on the (async) PaperBroker."""
    factory = ResilienceFactory(make_config(live=False, paper=True), database=False, logging=False)
    client = SyncClient()
    svc = name()
    broker = factory.create_resilient_broker(client, svc)
    paper = PaperBroker(lambda symbol: 20.0)
    factory.register_paper_broker(paper)
    broker.submit_order("AAPL", 5, "buy")
    assert client.orders == [] and len(paper.orders) == 1
    assert paper.positions == {"AAPL": 5}
    with pytest.raises(RiskLimitError):  # 505 × 20 > 10,000: valued at the client's price
        broker.submit_order("AAPL", 505, "buy")
    await factory.shutdown()


async def test_a_given_configuration_governs_its_proxies() -> None:
    """A factory built on another configuration than the process one pins its values."""
    svc = name()
    base = make_config(services={svc: {"failure_threshold": 7}})
    config = replace(
        base,
        resilience=replace(base.resilience, circuit_breaker_timeout=12.5, retry_max_attempts=2),
    )
    factory = ResilienceFactory(config, database=False, logging=False)
    feed = SimulatedFeed()
    data = factory.create_resilient_market_data(feed, svc)
    snap = resilient.breakers.get(svc).snapshot()
    assert snap.failure_threshold == 7
    assert snap.reset_timeout == 12.5
    feed.mode = "outage"
    with pytest.raises(VendorHTTPError):
        await data.get_bars("AAPL")
    assert feed.calls == 2
    await factory.shutdown()


async def test_process_configuration_values_are_left_to_the_decorators() -> None:
    """With the process configuration, unset values follow the resilience section."""
    svc = name()
    factory = ResilienceFactory(current_config(), database=False, logging=False)
    factory.create_resilient_market_data(SimulatedFeed(), svc)
    snap = resilient.breakers.get(svc).snapshot()
    res = current_config().resilience
    assert snap.failure_threshold == res.circuit_breaker_failure_threshold
    assert snap.reset_timeout == res.circuit_breaker_timeout
    await factory.shutdown()


async def test_client_rate_limit_refuses_before_the_vendor_is_called() -> None:
    """Over the client-side limit, a call is refused without reaching the vendor."""
    svc = name()
    config = make_config(
        services={svc: {"rate_limit": "2/minute", "rate_limit_max_wait": 0.0, "max_attempts": 1}}
    )
    factory = ResilienceFactory(config, database=False, logging=False)
    feed = SimulatedFeed()
    data = factory.create_resilient_market_data(feed, svc)
    await data.get_bars("AAPL")
    await data.get_bars("MSFT")
    with pytest.raises(RateLimitExceeded):
        await data.get_bars("SPY")  # not retried: the limiter already waited what it may
    assert feed.calls == 2
    assert await data.get_bars("AAPL")  # over the limit, a cached answer is served
    assert resilient.breakers.get(svc).snapshot().failure_count == 0
    usage = (await data._health())["api_usage"]
    assert usage["refused"] == 2 and usage["window_used"] == 2
    await factory.shutdown()


async def test_secrets_in_vendor_errors_never_reach_health_or_logs() -> None:
    """A vendor error carrying credentials is served around; health and logs stay clean."""
    lines: list[str] = []
    resilient.enable_logging("DEBUG", sink=lines.append)
    factory = ResilienceFactory(make_config(), database=False, logging=False)

    class LeakyFeed:
        fail = False

        async def get_current_price(self, symbol: str) -> float:
            if self.fail:
                raise ConnectionError(
                    "GET https://trader:hunter2pass@api.vendor.test/v2/last"
                    "?api_key=SUPERSECRETKEY123 failed"
                )
            return 10.0

    feed = LeakyFeed()
    data = factory.create_resilient_market_data(feed, name())
    try:
        assert await data.get_current_price("AAPL") == 10.0
        feed.fail = True
        assert await data.get_current_price("AAPL") == 10.0  # cached
        health = await factory.get_orchestrator().get_system_health()
        text = json.dumps(health, default=str) + "\n".join(lines)
        assert lines, "the failure was logged"
        assert "hunter2pass" not in text and "SUPERSECRETKEY123" not in text
    finally:
        resilient.disable_logging()
        await factory.shutdown()


async def test_only_a_literal_paper_flag_marks_a_paper_client() -> None:
    """A client whose ``paper`` is a method is live: its orders obey the live switch."""

    class Client(SyncClient):
        def paper(self) -> str:  # type: ignore[override]
            return "not a flag"

    factory = ResilienceFactory(make_config(live=False, paper=True), database=False, logging=False)
    client = Client()
    broker = factory.create_resilient_broker(client, name())
    with pytest.raises(TradingDisabledError):
        broker.submit_order("AAPL", 1, "buy")
    assert client.orders == []
    await factory.shutdown()


async def test_all_trading_off_refuses_paper_clients_too() -> None:
    """With live and paper trading both off, even a paper account gets no order."""
    factory = ResilienceFactory(make_config(live=False, paper=False), database=False, logging=False)
    sim = SimulatedBroker()
    broker = factory.create_resilient_broker(sim, name())
    with pytest.raises(TradingDisabledError, match="paper trading is off"):
        await broker.place_order("AAPL", 1, limit_price=10.0)
    assert sim.orders == []
    assert (await broker._health())["trading_mode"] == "disabled"
    await factory.shutdown()


@pytest.mark.redis
async def test_shared_circuit_state_and_redis_cache(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With redis.url and circuit_breaker_shared the factory installs the Redis cache and the
    shared circuit state, reports both, and removes them at shutdown."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AI_TRADER_REDIS__URL", redis_url)
    monkeypatch.setenv("AI_TRADER_REDIS__KEY_PREFIX", prefix)
    monkeypatch.setenv("AI_TRADER_REDIS__TIMEOUT", "1.0")
    monkeypatch.setenv("AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_SHARED", "true")
    monkeypatch.setenv("AI_TRADER_RESILIENCE__HEALTH_CHECK_ENABLED", "false")
    before = asyncio.all_tasks()
    config = reload_config()
    factory = ResilienceFactory(config, database=False, logging=False)
    try:
        report = await factory.initialize_resilience()
        assert report["components"]["shared_state"]["status"] == "healthy"
        assert report["components"]["cache"]["data"]["backend"] == "redis"
        svc = name()
        data = factory.create_resilient_market_data(SimulatedFeed(), svc)
        assert await data.get_current_price("AAPL") > 0
        assert resilient.breakers.get(svc).snapshot().shared
    finally:
        await factory.shutdown()
        monkeypatch.undo()
        reload_config()
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    assert "shared_state" not in factory.registry.names()
    from resilient._policies.breaker_storage import get_shared_backend

    assert get_shared_backend() is None
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


async def test_proxy_calls_feed_the_rolling_success_metrics() -> None:
    """Live reads, failed reads and cached answers show in the service's success metrics."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    feed = SimulatedFeed()
    svc = name()
    data = factory.create_resilient_market_data(feed, svc)
    for _ in range(4):
        await data.get_current_price("AAPL")
    feed.mode = "outage"
    stale = await data.get_current_price("AAPL")
    assert isinstance(stale, StalePrice)
    with pytest.raises((VendorHTTPError, resilient.CircuitOpenError)):
        await data.get_current_price("MSFT")  # nothing cached for this symbol
    health = await factory.get_orchestrator().get_system_health()
    metrics = health["metrics"][svc]
    assert metrics["samples"] == 5  # four live answers and one failure
    assert metrics["availability"] == pytest.approx(0.8)
    assert metrics["cached_reads"] == 1
    assert metrics["p95_latency_ms"] is not None
    assert metrics["p95_cached_latency_ms"] > 0  # the failed attempts before the cached answer
    await factory.shutdown()
