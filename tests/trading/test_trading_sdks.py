"""The broker proxy with the real SDK packages: alpaca-py's TradingClient against a local HTTP
server speaking Alpaca's REST API, and ccxt exchange classes whose transport is a local fake."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

import resilient
from resilient import RiskLimitError, TradingDisabledError
from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing import reset_state, zero_wait_retries

alpaca_trading = pytest.importorskip("alpaca.trading")
ccxt = pytest.importorskip("ccxt")


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    reset_state()
    with zero_wait_retries():
        yield
    reset_state()


def make_config(
    *, live: bool = True, services: dict[str, Any] | None = None, **trading: Any
) -> Config:
    base = current_config()
    svc: dict[str, Any] = {"defaults": {"rate_limit": "", "timeout": 2.0}}
    svc.update(services or {})
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=live,
            paper_trading_enabled=not live,
            risk_limits_enforced=True,
        ),
        trading=replace(
            base.trading,
            **{"risk_check_enabled": True, "order_lookup_backoff": 0.001, **trading},
        ),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": svc},
    )


def factory_for(config: Config) -> ResilienceFactory:
    return ResilienceFactory(config, registry=HealthRegistry(), logging=False, database=False)


def name() -> str:
    return f"svc_{uuid.uuid4().hex[:8]}"


class Feed:
    """A synchronous market-data client."""

    def __init__(self, price: float) -> None:
        self.price = price

    def get_current_price(self, symbol: str) -> float:
        return self.price


# -- alpaca-py --------------------------------------------------------------------------------


def _order_json(body: dict[str, Any]) -> dict[str, Any]:
    now = "2026-01-02T15:04:05Z"
    return {
        "id": str(uuid.uuid4()),
        "client_order_id": body.get("client_order_id") or str(uuid.uuid4()),
        "created_at": now,
        "updated_at": now,
        "submitted_at": now,
        "asset_id": str(uuid.uuid4()),
        "symbol": body.get("symbol", "AAPL"),
        "asset_class": "us_equity",
        "qty": body.get("qty"),
        "notional": body.get("notional"),
        "filled_qty": "0",
        "order_class": "simple",
        "order_type": body.get("type", "market"),
        "type": body.get("type", "market"),
        "side": body.get("side", "buy"),
        "time_in_force": body.get("time_in_force", "day"),
        "limit_price": body.get("limit_price"),
        "stop_price": body.get("stop_price"),
        "status": "accepted",
        "extended_hours": False,
    }


class AlpacaServer:
    """Alpaca's trading REST API, as far as the tests need it. ``script`` plays one step per
    order POST: ``ok``, ``lost504`` (record the order, answer 504), ``reject403``."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []
        self.script: list[str] = []
        self.positions: dict[str, str] = {}
        self.lookups = 0
        self.deletes = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: Any) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.posts.append(body)
                step = server.script.pop(0) if server.script else "ok"
                if step == "reject403":
                    return self._send(
                        403, {"code": 40310000, "message": "insufficient buying power"}
                    )
                cid = body.get("client_order_id")
                if cid and cid in server.orders:
                    return self._send(
                        422, {"code": 40010001, "message": "client_order_id must be unique"}
                    )
                order = _order_json(body)
                server.orders[order["client_order_id"]] = order
                if step == "lost504":
                    return self._send(504, {"message": "gateway timeout"})
                return self._send(200, order)

            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path == "/v2/orders:by_client_order_id":
                    server.lookups += 1
                    cid = parse_qs(url.query).get("client_order_id", [""])[0]
                    if cid in server.orders:
                        return self._send(200, server.orders[cid])
                    return self._send(404, {"code": 40410000, "message": "order not found"})
                if url.path.startswith("/v2/positions/"):
                    symbol = url.path.rsplit("/", 1)[1]
                    if symbol not in server.positions:
                        return self._send(
                            404, {"code": 40410000, "message": "position does not exist"}
                        )
                    return self._send(200, _position_json(symbol, server.positions[symbol]))
                if url.path == "/v2/orders":
                    return self._send(200, list(server.orders.values()))
                return self._send(404, {"code": 40400000, "message": "not found"})

            def do_DELETE(self) -> None:
                server.deletes += 1
                if urlparse(self.path).path == "/v2/orders":
                    return self._send(207, [])
                return self._send(204, None)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _position_json(symbol: str, qty: str) -> dict[str, Any]:
    return {
        "asset_id": str(uuid.uuid4()),
        "symbol": symbol,
        "exchange": "NASDAQ",
        "asset_class": "us_equity",
        "avg_entry_price": "100",
        "qty": qty,
        "side": "long" if not qty.startswith("-") else "short",
        "market_value": "1000",
        "cost_basis": "1000",
        "unrealized_pl": "0",
        "unrealized_plpc": "0",
        "unrealized_intraday_pl": "0",
        "unrealized_intraday_plpc": "0",
        "current_price": "100",
        "lastday_price": "100",
        "change_today": "0",
        "qty_available": qty,
    }


@pytest.fixture
def alpaca_server() -> Iterator[AlpacaServer]:
    server = AlpacaServer()
    yield server
    server.close()


def alpaca_client(server: AlpacaServer) -> Any:
    return alpaca_trading.TradingClient("key-id", "secret-key", paper=True, url_override=server.url)


def market_order(qty: float, side: str = "buy", **extra: Any) -> Any:
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    return MarketOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide(side),
        time_in_force=TimeInForce.DAY,
        **extra,
    )


def test_alpaca_hidden_retries_are_turned_off(alpaca_server: AlpacaServer) -> None:
    """The proxy turns off alpaca-py's own 429/504 retries (which resend order POSTs)."""
    client = alpaca_client(alpaca_server)
    assert client._retry == 3
    proxy = factory_for(make_config()).create_resilient_broker(client, name())
    assert proxy.wrapped._retry == 0 and proxy.wrapped._retry_codes == []


def test_alpaca_504_after_recording_returns_the_order_once(alpaca_server: AlpacaServer) -> None:
    """One 504 after Alpaca recorded the order: the proxy resends with the same client order
    id, gets "client_order_id must be unique", looks the order up and returns it — one order,
    two POSTs (alpaca-py alone would make up to 4 × 3)."""
    factory = factory_for(make_config())
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), name())
    alpaca_server.script = ["lost504"]
    order = proxy.submit_order(market_order(10))
    assert len(alpaca_server.orders) == 1
    assert order.client_order_id in alpaca_server.orders
    assert len(alpaca_server.posts) == 2
    assert {p["client_order_id"] for p in alpaca_server.posts} == {order.client_order_id}


def test_alpaca_duplicate_on_the_first_attempt_triggers_the_lookup(
    alpaca_server: AlpacaServer,
) -> None:
    """The order already exists under its id (an SDK retry sent it): the first answer is the
    duplicate rejection, and the proxy returns the existing order."""
    factory = factory_for(make_config())
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), name())
    cid = uuid.uuid4().hex
    alpaca_server.orders[cid] = _order_json({"client_order_id": cid, "qty": "1"})
    order = proxy.submit_order(market_order(1, client_order_id=cid))
    assert str(order.client_order_id) == cid
    assert len(alpaca_server.posts) == 1 and alpaca_server.lookups == 1


def test_alpaca_orders_are_risk_checked(alpaca_server: AlpacaServer) -> None:
    """alpaca-py request objects are valued (market orders at the market price)."""
    factory = factory_for(make_config())
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), name())
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.submit_order(market_order(101))
    assert alpaca_server.posts == []


def test_alpaca_no_position_404_does_not_open_the_circuit(alpaca_server: AlpacaServer) -> None:
    """get_open_position answers 404 when nothing is held: the risk check takes it as zero.
    Refused orders in a row (only their position reads reach Alpaca) leave the circuit closed,
    and the next order goes through."""
    svc = name()
    factory = factory_for(make_config(services={svc: {"failure_threshold": 2}}))
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), svc)
    for _ in range(3):
        with pytest.raises(RiskLimitError, match="max_order_size"):
            proxy.submit_order(market_order(500))
    assert resilient.breakers.get(svc).state == "closed"
    proxy.submit_order(market_order(1))
    assert len(alpaca_server.orders) == 1


def test_alpaca_closed_position_is_not_served_from_the_cache(alpaca_server: AlpacaServer) -> None:
    """After a position was closed, get_open_position raises the 404 (no cached position), and
    the risk check values the order against zero."""
    factory = factory_for(make_config(max_position_size=10_000.0))
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), name())
    alpaca_server.positions["AAPL"] = "95"
    assert proxy.get_open_position("AAPL").qty == "95"
    with pytest.raises(RiskLimitError, match="max_position_size"):
        proxy.submit_order(market_order(10))  # 95 + 10 > 100 shares at 100
    del alpaca_server.positions["AAPL"]
    with pytest.raises(Exception, match="position does not exist"):
        proxy.get_open_position("AAPL")
    proxy.submit_order(market_order(10))
    assert len(alpaca_server.orders) == 1


def test_alpaca_403_rejections_do_not_open_the_circuit(alpaca_server: AlpacaServer) -> None:
    """Four "insufficient buying power" 403s: the circuit stays closed; cancels work."""
    from alpaca.common.exceptions import APIError

    svc = name()
    factory = factory_for(make_config(services={svc: {"failure_threshold": 3}}))
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(alpaca_client(alpaca_server), svc)
    alpaca_server.script = ["reject403"] * 4
    for _ in range(4):
        with pytest.raises(APIError, match="insufficient buying power"):
            proxy.submit_order(market_order(1))
    assert resilient.breakers.get(svc).state == "closed"
    proxy.cancel_order_by_id(str(uuid.uuid4()))


def test_alpaca_live_trading_off_refuses_and_cancels_still_work(
    alpaca_server: AlpacaServer,
) -> None:
    """With live trading off and no paper broker: submit_order is refused, cancels go through."""
    proxy = factory_for(make_config(live=False)).create_resilient_broker(
        alpaca_client(alpaca_server), name()
    )
    with pytest.raises(TradingDisabledError):
        proxy.submit_order(market_order(1))
    proxy.cancel_order_by_id(str(uuid.uuid4()))
    proxy.cancel_orders()
    assert alpaca_server.posts == [] and alpaca_server.deletes == 2
    assert proxy.method_kinds["close_position"] == "order"
    assert proxy.undeclared_methods == {
        "set_account_configurations",
        "post",
        "put",
        "patch",
        "delete",
    }
    with pytest.raises(TradingDisabledError, match="declare its kind"):
        proxy.post("/orders", {"symbol": "AAPL", "qty": 1})  # the raw verb is guarded too


# -- ccxt -------------------------------------------------------------------------------------

BTC_MARKET = {
    "id": "BTCUSDT",
    "symbol": "BTC/USDT",
    "base": "BTC",
    "quote": "USDT",
    "baseId": "BTC",
    "quoteId": "USDT",
    "spot": True,
    "type": "spot",
    "active": True,
    "margin": False,
    "swap": False,
    "future": False,
    "option": False,
    "contract": False,
    "linear": None,
    "inverse": None,
    "precision": {"amount": 0.00001, "price": 0.01},
    "limits": {
        "amount": {"min": 0.00001, "max": 9000},
        "price": {"min": 0.01, "max": 1_000_000},
        "cost": {"min": 5, "max": None},
    },
    "info": {"orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"]},
}


class FakeBinance:
    """Binance's REST answers behind ccxt's own request building (``fetch2`` replaced):
    order POSTs are recorded, then answered per ``script`` (``ok``, ``lost``: recorded, then
    a ccxt RequestTimeout, ``ratelimited``: a ccxt RateLimitExceeded before recording)."""

    def __init__(self, price: float = 50_000.0) -> None:
        self.price = price
        self.orders: list[dict[str, Any]] = []
        self.posts: list[dict[str, Any]] = []
        self.script: list[str] = []

    def exchange(self, cls: Any = None) -> Any:
        exchange = (cls or ccxt.binance)({"apiKey": "key-id", "secret": "secret-key"})
        exchange.set_markets([BTC_MARKET])
        exchange.fetch2 = self.fetch2
        return exchange

    def fetch2(
        self,
        path: str,
        api: Any = "public",
        method: str = "GET",
        params: dict[str, Any] | None = None,
        headers: Any = None,
        body: Any = None,
        config: Any = None,
    ) -> Any:
        params = dict(params or {})
        if path == "order" and method == "POST":
            self.posts.append(params)
            step = self.script.pop(0) if self.script else "ok"
            if step == "ratelimited":
                raise ccxt.RateLimitExceeded("binance 429 Too Many Requests")
            cid = params.get("newClientOrderId")
            if any(o["clientOrderId"] == cid for o in self.orders):
                raise ccxt.DuplicateOrderId("binance Duplicate order sent.")
            order = {
                "symbol": "BTCUSDT",
                "orderId": len(self.orders) + 1,
                "clientOrderId": cid,
                "transactTime": 1_700_000_000_000,
                "price": params.get("price", "0"),
                "origQty": params.get("quantity"),
                "executedQty": "0",
                "status": "NEW",
                "timeInForce": "GTC",
                "type": params.get("type"),
                "side": params.get("side"),
            }
            self.orders.append(order)
            if step == "lost":
                raise ccxt.RequestTimeout("binance POST https://api.binance.com/api/v3/order")
            return order
        if path == "openOrders":
            return list(self.orders)
        if path in ("ticker/24hr", "ticker/price"):
            return {"symbol": "BTCUSDT", "lastPrice": str(self.price), "price": str(self.price)}
        return {}


def ccxt_proxy(fake: FakeBinance, *, services: dict[str, Any] | None = None, **cfg: Any) -> Any:
    factory = factory_for(make_config(services=services, **cfg))
    return factory.create_resilient_broker(fake.exchange(), name())


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.create_order("BTC/USDT", "limit", "buy", 1000, 50000),  # $50M
        lambda p: p.create_order("BTC/USDT", "market", "buy", 1000),
        lambda p: p.create_market_buy_order("BTC/USDT", 1000),
        lambda p: p.create_order("BTC/USDT", "market", "buy", amount=1000),
        lambda p: p.create_limit_sell_order("BTC/USDT", 1000, 0.01),  # marketable limit
        lambda p: p.create_order("BTC/USDT", "market", "buy", None),  # no quantity
    ],
)
def test_ccxt_orders_are_risk_checked(call: Any) -> None:
    """ccxt's create_order family (amount, price, side in the method name) is valued and
    refused above max_order_size (10,000); an order without a quantity is refused."""
    fake = FakeBinance()
    proxy = ccxt_proxy(fake)
    with pytest.raises(RiskLimitError):
        call(proxy)
    assert fake.posts == []


def test_ccxt_order_within_limits_gets_a_client_order_id() -> None:
    """A small ccxt order goes through with a client order id supplied through params and
    reused by the retry after a rate-limit answer."""
    fake = FakeBinance()
    proxy = ccxt_proxy(fake)
    fake.script = ["ratelimited"]
    order = proxy.create_order("BTC/USDT", "limit", "buy", 0.1, 50_000)  # 5,000
    assert len(fake.posts) == 2 and len(fake.orders) == 1
    cid = fake.posts[0]["newClientOrderId"]
    assert len(cid) == 32 and fake.posts[1]["newClientOrderId"] == cid
    assert order["clientOrderId"] == cid
    mine = proxy.create_order("BTC/USDT", "limit", "sell", 0.1, 50_000, {"clientOrderId": "mine-1"})
    assert mine["clientOrderId"] == "mine-1"


def test_ccxt_lost_answer_is_found_among_open_orders() -> None:
    """A RequestTimeout after Binance recorded the order: the retry is rejected as a duplicate,
    the proxy finds the order by its client order id in the open orders."""
    fake = FakeBinance()
    proxy = ccxt_proxy(fake)
    fake.script = ["lost"]
    order = proxy.create_order("BTC/USDT", "limit", "buy", 0.1, 50_000)
    assert len(fake.orders) == 1
    assert order["clientOrderId"] == fake.orders[0]["clientOrderId"]


def test_ccxt_business_errors_do_not_open_the_circuit() -> None:
    """InsufficientFunds, InvalidOrder and BadSymbol are answers, not outages."""

    svc = name()
    factory = factory_for(make_config(services={svc: {"failure_threshold": 2}}))
    fake = FakeBinance()
    exchange = fake.exchange()
    errors = iter(
        [
            ccxt.InsufficientFunds("binance Account has insufficient balance"),
            ccxt.InvalidOrder("binance Order would immediately trigger"),
            ccxt.BadSymbol("binance does not have market symbol BTC/USDT"),
        ]
    )

    def fetch2(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == "order":
            raise next(errors)
        return fake.fetch2(path, *args, **kwargs)

    exchange.fetch2 = fetch2
    proxy = factory.create_resilient_broker(exchange, svc)
    for expected in (ccxt.InsufficientFunds, ccxt.InvalidOrder, ccxt.BadSymbol):
        with pytest.raises(expected):
            proxy.create_order("BTC/USDT", "limit", "buy", 0.1, 50_000)
    assert resilient.breakers.get(svc).state == "closed"


async def test_ccxt_async_support_exchange() -> None:
    """ccxt.async_support exchanges: orders are valued and keyed the same way."""
    import ccxt.async_support as accxt

    fake = FakeBinance()
    exchange = accxt.binance({"apiKey": "key-id", "secret": "secret-key"})
    exchange.set_markets([BTC_MARKET])

    async def fetch2(*args: Any, **kwargs: Any) -> Any:
        return fake.fetch2(*args, **kwargs)

    exchange.fetch2 = fetch2
    try:
        proxy = factory_for(make_config()).create_resilient_broker(exchange, name())
        with pytest.raises(RiskLimitError):
            await proxy.create_market_buy_order("BTC/USDT", 1000)
        order = await proxy.create_order("BTC/USDT", "limit", "buy", 0.1, 50_000)
        assert len(order["clientOrderId"]) == 32
    finally:
        await exchange.close()


# -- ib_insync --------------------------------------------------------------------------------


@pytest.fixture
def ib_loop() -> Iterator[None]:
    """ib_insync binds its objects to the thread's current event loop: give them one."""
    import asyncio

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def ib_client() -> tuple[Any, list[tuple[str, Any]]]:
    """ib_insync's real ``IB`` object with its socket client's two order calls recorded."""
    ib_insync = pytest.importorskip("ib_insync")
    ib = ib_insync.IB()
    sent: list[tuple[str, Any]] = []
    ids = iter(range(1, 1000))
    ib.client.getReqId = lambda: next(ids)
    ib.client.placeOrder = lambda order_id, contract, order: sent.append(("place", order))
    ib.client.cancelOrder = lambda order_id, *args: sent.append(("cancel", order_id))
    return ib, sent


@pytest.mark.usefixtures("ib_loop")
def test_ib_insync_orders_are_valued_and_keyed() -> None:
    """placeOrder(contract, order): totalQuantity, lmtPrice (unset price = none) and action are
    read; market and marketable orders above the limit are refused; orderRef gets an id."""
    from ib_insync import LimitOrder, MarketOrder, Stock

    ib, sent = ib_client()
    factory = factory_for(make_config())
    factory.create_resilient_market_data(Feed(100.0), name())
    proxy = factory.create_resilient_broker(ib, name())
    stock = Stock("AAPL", "SMART", "USD")
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.placeOrder(stock, MarketOrder("BUY", 1000))
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.placeOrder(stock, LimitOrder("SELL", 1000, 0.01))
    with pytest.raises(RiskLimitError, match="cannot be valued"):
        proxy.placeOrder(stock, MarketOrder("BUY", float("nan")))
    assert sent == []
    trade = proxy.placeOrder(stock, LimitOrder("BUY", 10, 100.0))
    assert [kind for kind, _ in sent] == ["place"]
    assert len(sent[0][1].orderRef) == 32
    assert trade.order.orderRef == sent[0][1].orderRef


@pytest.mark.usefixtures("ib_loop")
def test_ib_insync_cancels_and_events_with_live_trading_off() -> None:
    """With live trading off: placeOrder is refused, cancelOrder and reqGlobalCancel reach IB,
    the loop helpers are not guarded, and events are the IB object's own."""
    from ib_insync import LimitOrder, Stock

    ib, sent = ib_client()
    ib.client.reqGlobalCancel = lambda *args: sent.append(("global", None))
    proxy = factory_for(make_config(live=False)).create_resilient_broker(ib, name())
    with pytest.raises(TradingDisabledError):
        proxy.placeOrder(Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 1, 10.0))
    order = LimitOrder("BUY", 1, 10.0)
    order.orderId = 7
    proxy.cancelOrder(order)
    proxy.reqGlobalCancel()
    assert [kind for kind, _ in sent] == ["cancel", "global"]
    assert proxy.undeclared_methods == frozenset()
    assert proxy.method_kinds["sleep"] == "other"
    seen: list[Any] = []
    proxy.orderStatusEvent += seen.append
    ib.orderStatusEvent.emit("status")
    assert seen == ["status"]


def test_ccxt_exchange_without_client_ids_gets_none() -> None:
    """An exchange whose create_order reads no client order id (paymium) gets none, so its
    orders are never retried on the belief that an id makes them safe."""
    from resilient.trading._sdk import ccxt_id_key

    assert ccxt_id_key(ccxt.paymium()) is None
    assert ccxt_id_key(ccxt.binance()) == "clientOrderId"
    assert ccxt_id_key(object()) is None
