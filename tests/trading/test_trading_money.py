"""Money safety of the broker proxy: what never reaches a broker, what always does, and how
outcomes are counted (one section per rule)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import RiskLimitError, TradingDisabledError
from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing import reset_state, zero_wait_retries
from resilient.trading import PaperBroker
from resilient.trading._methods import SDK_VOCABULARY, guess_kind


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
    svc: dict[str, Any] = {"defaults": {"rate_limit": "", "timeout": 1.0}}
    svc.update(services or {})
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=live,
            paper_trading_enabled=paper,
            risk_limits_enforced=True,
        ),
        trading=replace(base.trading, **{"risk_check_enabled": True, **trading}),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": svc},
    )


def factory_for(config: Config) -> ResilienceFactory:
    return ResilienceFactory(config, registry=HealthRegistry(), logging=False, database=False)


def name() -> str:
    return f"svc_{uuid.uuid4().hex[:8]}"


class Recorder:
    """Records every call that reached the 'broker'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def client_with(*methods: str) -> Any:
    """A synchronous client whose methods only record that they were called."""
    recorder = Recorder()

    def make(method: str) -> Any:
        def call(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            recorder.calls.append((method, args, kwargs))
            return {"ok": True}

        call.__name__ = method
        return call

    cls = type("Client", (), {m: make(m) for m in methods})
    obj = cls()
    obj.recorder = recorder
    return obj


# -- 1. unrecognised order methods ----------------------------------------------------------

VOCABULARY_ORDERS = [
    "market_order_buy",
    "limit_order_gtc_buy",
    "add_order",
    "AddOrder",
    "batch_orders",
    "create_order",
    "create_market_buy_order",
    "new_order",
    "placeOrder",
    "submit_order",
    "order_market_buy",
    "stop_limit_order_gtc_sell",
    "private_post_order",
    "withdraw",
]


@pytest.mark.parametrize(
    ("method", "kind"),
    [
        *[(m, "order") for m in VOCABULARY_ORDERS],
        ("cancelOrder", "cancel"),
        ("reqGlobalCancel", "cancel"),
        ("cancel_order_by_id", "cancel"),
        ("private_delete_order", "cancel"),
        ("get_open_position", "read"),
        ("fetch_balance", "read"),
        ("fetchTicker", "read"),
        ("reqPositions", "read"),
        ("new_order_test", "read"),
        ("create_order_request", "other"),
        ("connect", "other"),
        ("query_private", None),
        ("fetch2", None),
        ("set_leverage", None),
    ],
)
def test_sdk_vocabulary_name_by_name(method: str, kind: str | None) -> None:
    """The SDK vocabulary table and name patterns give each common SDK method its kind;
    generic request methods stay undeclared."""
    assert guess_kind(method, default=None) == kind


def test_vocabulary_table_values_are_kinds() -> None:
    """Every table entry is a kind (or the undeclared marker)."""
    assert set(SDK_VOCABULARY.values()) <= {"read", "order", "cancel", "other", ""}


@pytest.mark.parametrize("method", [*VOCABULARY_ORDERS, "frobnicate", "set_leverage"])
def test_order_and_unknown_methods_refused_with_live_trading_off(method: str) -> None:
    """With live trading off and no paper broker, an order method of any SDK and a method of
    unknown kind never reach the broker."""
    client = client_with(method)
    proxy = factory_for(make_config()).create_resilient_broker(client, name())
    with pytest.raises(TradingDisabledError):
        getattr(proxy, method)("AAPL", 1)
    assert client.recorder.calls == []


@given(
    method=st.from_regex(r"\A[a-z][a-z0-9_]{2,24}\Z").filter(
        lambda m: guess_kind(m, default=None) not in ("read", "other", "cancel")
    )
)
@settings(max_examples=150, deadline=None)
def test_any_method_not_known_as_read_is_refused_with_live_trading_off(method: str) -> None:
    """Fail closed over the class of method names: whatever the name, a broker method that is
    not known to be a read, a cancel or harmless is refused while live trading is off."""
    reset_state()
    client = client_with(method)
    proxy = factory_for(make_config(paper=False)).create_resilient_broker(client, name())
    with pytest.raises(TradingDisabledError) as info:
        getattr(proxy, method)(symbol="AAPL", qty=1, limit_price=1.0)
    assert client.recorder.calls == []
    if guess_kind(method, default=None) is None:
        assert "declare its kind" in str(info.value)
        assert method in proxy.undeclared_methods


def test_declared_kinds_let_a_method_through() -> None:
    """Declaring an unknown method as a read (argument or settings) lets it through."""
    client = client_with("frobnicate", "set_leverage")
    svc = name()
    config = make_config(services={svc: {"methods": {"set_leverage": {"kind": "other"}}}})
    proxy = factory_for(config).create_resilient_broker(client, svc, kinds={"frobnicate": "read"})
    assert proxy.frobnicate("x") == {"ok": True}
    assert proxy.set_leverage(3) == {"ok": True}
    assert proxy.undeclared_methods == frozenset()
    assert [c[0] for c in client.recorder.calls] == ["frobnicate", "set_leverage"]


def test_undeclared_method_passes_on_a_paper_broker_and_with_live_trading() -> None:
    """A paper client, or live trading on, lets an undeclared method through."""
    paper_client = client_with("frobnicate")
    paper = factory_for(make_config()).create_resilient_broker(paper_client, name(), paper=True)
    assert paper.frobnicate() == {"ok": True}
    live_client = client_with("frobnicate")
    live = factory_for(make_config(live=True, paper=False)).create_resilient_broker(
        live_client, name()
    )
    assert live.frobnicate() == {"ok": True}


def test_bad_kinds_argument_is_a_clear_error() -> None:
    """A wrong kind or a method the client does not have is named in the error."""
    client = client_with("frobnicate")
    factory = factory_for(make_config())
    with pytest.raises(ValueError, match="'write' is not a method kind"):
        factory.create_resilient_broker(client, name(), kinds={"frobnicate": "write"})
    with pytest.raises(ValueError, match="no public method 'nope'"):
        factory.create_resilient_broker(client, name(), kinds={"nope": "read"})


def test_market_data_methods_are_reads_by_default() -> None:
    """On a market-data proxy an unknown method is a read (no trading switch)."""
    client = client_with("frobnicate")
    data = factory_for(make_config()).create_resilient_market_data(client, name())
    assert data.frobnicate() == {"ok": True}
    assert data.undeclared_methods == frozenset()


# -- 2. orders that cannot be valued ---------------------------------------------------------


class FieldBroker:
    """An SDK whose order methods take their sizes under many names."""

    paper = True

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def add_order(self, symbol: str, side: str, **fields: Any) -> dict[str, Any]:
        self.sent.append({"symbol": symbol, "side": side, **fields})
        return {"ok": True}

    def submit_order(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.sent.append({"args": args, **kwargs})
        return {"ok": True}

    def get_current_price(self, symbol: str) -> float:
        return 100.0


BAD_NUMBERS = st.one_of(
    st.sampled_from(
        [
            math.nan,
            Decimal("NaN"),
            Decimal("sNaN"),
            math.inf,
            -math.inf,
            Decimal("Infinity"),
            0,
            0.0,
            "lots",
            "",
            "nan",
            "inf",
            "1e400",
            True,
            [1],
            object(),
        ]
    ),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x < math.inf),
    st.decimals(max_value=0),
    st.text(alphabet="abcxyz ", max_size=5),
)
SIZE_FIELDS = ["qty", "quantity", "amount", "volume", "size", "quote_size", "notional"]


@given(value=BAD_NUMBERS, field=st.sampled_from(SIZE_FIELDS), enabled=st.booleans())
@settings(max_examples=300, deadline=None)
def test_unvaluable_sizes_are_refused_before_the_broker(
    value: Any, field: str, enabled: bool
) -> None:
    """NaN, infinities, zero, negatives with a side, and non-numbers under any size field are
    refused with RiskLimitError before the broker is called, risk checks on or off."""
    reset_state()
    broker = FieldBroker()
    config = make_config(risk_check_enabled=enabled)
    proxy = factory_for(config).create_resilient_broker(broker, name())
    with pytest.raises(RiskLimitError, match="cannot be valued"):
        proxy.add_order("AAPL", "buy", **{field: value}, limit_price=1.0)
    assert broker.sent == []


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.submit_order("AAPL", 10**9),  # size positionally in *args
        lambda p: p.submit_order("AAPL", "1000000", qty=1),  # a second size in *args
        lambda p: p.submit_order("AAPL", 10**9, qty=1, limit_price=1.0),
        lambda p: p.submit_order("AAPL", "buy"),  # no size at all
        lambda p: p.add_order("AAPL", "buy"),
        lambda p: p.add_order("AAPL", "buy", qty=5, limit_price=math.nan),
        lambda p: p.add_order("AAPL", "buy", qty=5, stop_price=-1.0),
        lambda p: p.add_order("AAPL", "buy", qty=-5),  # negative with a side
    ],
)
def test_orders_without_a_readable_size_are_refused(call: Any) -> None:
    """A size hidden in ``*args``, a missing size or an invalid price refuses the order."""
    broker = FieldBroker()
    proxy = factory_for(make_config()).create_resilient_broker(broker, name())
    with pytest.raises(RiskLimitError):
        call(proxy)
    assert broker.sent == []


@pytest.mark.parametrize("field", ["amount", "volume", "size", "quantity", "base_size"])
def test_size_under_sdk_names_is_checked_against_max_order_size(field: str) -> None:
    """amount= (ccxt), volume= (Kraken), base_size= (Coinbase)... are read and checked."""
    broker = FieldBroker()
    proxy = factory_for(make_config()).create_resilient_broker(broker, name())
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.add_order("AAPL", "buy", **{field: 1000})  # 1000 × 100 > 10,000
    assert broker.sent == []
    assert proxy.add_order("AAPL", "buy", **{field: "10"}) == {"ok": True}  # strings parse


@pytest.mark.parametrize("field", ["quote_size", "notional", "quoteOrderQty", "cost"])
def test_quote_amounts_are_checked(field: str) -> None:
    """Notional amounts under the SDKs' names are checked against max_order_size."""
    broker = FieldBroker()
    proxy = factory_for(make_config()).create_resilient_broker(broker, name())
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.add_order("AAPL", "buy", **{field: 50_000})
    assert broker.sent == []


async def test_nan_never_enters_the_paper_position_book() -> None:
    """A NaN order through PaperBroker is refused and max_position_size keeps working."""
    paper = PaperBroker(lambda s: 100.0)
    with pytest.raises(ValueError, match="positive and finite"):
        await paper.place_order("AAPL", math.nan)
    with pytest.raises(ValueError, match="positive and finite"):
        await paper.place_order("AAPL", 1, limit_price=math.inf)
    assert paper.positions == {}
    factory = factory_for(make_config(max_position_size=50_000.0))
    factory.register_paper_broker(paper)
    live = LiveBroker()
    proxy = factory.create_resilient_broker(live, name())
    with pytest.raises(RiskLimitError):
        await proxy.place_order("AAPL", math.nan, "buy", limit_price=100.0)
    assert paper.positions == {}
    for _ in range(5):
        await proxy.place_order("AAPL", 90, "buy", limit_price=100.0)
    with pytest.raises(RiskLimitError, match="max_position_size"):
        await proxy.place_order("AAPL", 90, "buy", limit_price=100.0)
    assert paper.positions == {"AAPL": 450.0}
    assert live.sent == []


class LiveBroker:
    """A live broker with an alpaca-like keyword order method."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        self.sent.append({"symbol": symbol, "qty": qty, "client_order_id": client_order_id})
        return {"id": len(self.sent)}


# -- 3. marketable limit and stop orders -----------------------------------------------------


class Feed:
    def __init__(self, price: float | None) -> None:
        self.price = price

    def get_current_price(self, symbol: str) -> float:
        if self.price is None:
            raise ConnectionError("feed down")
        return self.price


def broker_with_feed(price: float | None, **trading: Any) -> tuple[Any, LiveBroker]:
    factory = factory_for(make_config(live=True, paper=False, **trading))
    factory.create_resilient_market_data(Feed(price), name())
    live = LiveBroker()
    return factory.create_resilient_broker(live, name()), live


def test_marketable_sell_limit_is_valued_at_the_market() -> None:
    """Selling 1,000,000 shares with limit_price=0.000001 while the market is at 100 is valued
    at 100 per share and refused."""
    import asyncio

    proxy, live = broker_with_feed(100.0)
    with pytest.raises(RiskLimitError, match="max_order_size"):
        asyncio.run(proxy.place_order("AAPL", 1_000_000, "sell", limit_price=0.000001))
    assert live.sent == []


@given(
    market=st.floats(1.0, 1000.0),
    ratio=st.floats(1e-9, 1.0),
    side=st.sampled_from(["buy", "sell"]),
    field=st.sampled_from(["limit_price", "stop_price"]),
)
@settings(max_examples=200, deadline=None)
async def test_order_valued_at_worst_case_fill(
    market: float, ratio: float, side: str, field: str
) -> None:
    """Any limit or stop price below the market, either side: the notional is qty × market,
    so an order above max_order_size at the market is refused."""
    reset_state()
    factory = factory_for(make_config(live=True, paper=False))
    factory.create_resilient_market_data(Feed(market), name())
    live = FieldBroker()
    proxy = factory.create_resilient_broker(live, name(), paper=False)
    qty = 10_000.0 / market * 1.01  # just above the limit at the market price
    with pytest.raises(RiskLimitError, match="max_order_size"):
        proxy.add_order("AAPL", side, qty=qty, **{field: market * ratio})
    assert live.sent == []


def test_limit_above_market_is_valued_at_the_limit() -> None:
    """A buy limit above the market is valued at the limit (the higher price)."""
    import asyncio

    proxy, live = broker_with_feed(10.0)
    with pytest.raises(RiskLimitError, match="max_order_size"):
        asyncio.run(proxy.place_order("AAPL", 200, "buy", limit_price=60.0))  # 12,000
    asyncio.run(proxy.place_order("AAPL", 200, "buy", limit_price=40.0))  # 8,000
    assert len(live.sent) == 1


def test_no_market_price_and_no_order_price_is_refused() -> None:
    """With no market price, a market order is refused; a limit order is valued at its limit."""
    import asyncio

    proxy, live = broker_with_feed(None)
    with pytest.raises(RiskLimitError, match="no market price"):
        asyncio.run(proxy.place_order("ZZZ", 1, "buy"))
    asyncio.run(proxy.place_order("ZZZ", 1, "buy", limit_price=5.0))
    assert len(live.sent) == 1


# -- 4. blank client order ids ---------------------------------------------------------------


class BlankIgnoringBroker:
    """A broker that ignores a blank client order id (as real ones do) and loses the answer of
    the first order it records."""

    paper = True

    def __init__(self) -> None:
        self.orders: list[dict[str, Any]] = []
        self.lose_next = True

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        key = client_order_id if client_order_id and client_order_id.strip() else None
        for order in self.orders:
            if key is not None and order["client_order_id"] == key:
                return order
        order = {"symbol": symbol, "qty": qty, "client_order_id": key}
        self.orders.append(order)
        if self.lose_next:
            self.lose_next = False
            raise ConnectionResetError(104, "Connection reset by peer")
        return order


@given(blank=st.text(alphabet=" \t\n\r", max_size=4))
@settings(max_examples=50, deadline=None)
async def test_blank_client_order_id_counts_as_none(blank: str) -> None:
    """``client_order_id=""`` or whitespace: the proxy supplies a real id, so a retry after a
    lost answer cannot execute the order twice."""
    reset_state()
    broker = BlankIgnoringBroker()
    proxy = factory_for(make_config()).create_resilient_broker(broker, name())
    await proxy.place_order("AAPL", 1, "buy", limit_price=10.0, client_order_id=blank)
    assert len(broker.orders) == 1
    assert len(broker.orders[0]["client_order_id"]) == 32


def test_blank_id_in_an_order_object_is_replaced() -> None:
    """A blank id inside a request object or dict is replaced by a fresh one."""
    import inspect

    from resilient.trading import prepare_order_call

    def send(order: dict[str, Any]) -> None: ...

    call = prepare_order_call(
        inspect.signature(send), ({"symbol": "X", "qty": 1, "client_order_id": "  "},), {}
    )
    sent = call.args[0] if call.args else call.kwargs["order"]
    assert call.has_idempotency_key
    assert sent["client_order_id"] == call.intent.client_order_id
    assert len(sent["client_order_id"]) == 32


# -- 5. trading states -----------------------------------------------------------------------


class PositionBroker(LiveBroker):
    """A live broker that reports a position and can cancel."""

    def __init__(self, position: float) -> None:
        super().__init__()
        self.position = position
        self.cancelled: list[str] = []
        self.other_calls = 0

    async def get_position(self, symbol: str) -> float:
        return self.position

    async def cancel_order(self, order_id: str) -> bool:
        self.cancelled.append(order_id)
        return True

    async def set_leverage(self, value: int) -> None:
        self.other_calls += 1


def state_broker(position: float, **trading: Any) -> tuple[ResilienceFactory, Any, PositionBroker]:
    factory = factory_for(make_config(live=True, paper=False, **trading))
    broker = PositionBroker(position)
    return factory, factory.create_resilient_broker(broker, name()), broker


async def test_halted_lets_only_cancels_through() -> None:
    """``halted``: orders and undeclared methods are refused, a cancel reaches the broker."""
    factory, proxy, broker = state_broker(10.0, state="halted")
    assert factory.trading_state == "halted"
    with pytest.raises(TradingDisabledError) as info:
        await proxy.place_order("AAPL", 1, "sell", limit_price=10.0)
    assert info.value.rule == "trading.state"
    with pytest.raises(TradingDisabledError):
        await proxy.set_leverage(3)
    assert await proxy.cancel_order("o-1") is True
    assert broker.sent == [] and broker.other_calls == 0
    assert broker.cancelled == ["o-1"]


@given(
    position=st.integers(-100, 100),
    qty=st.integers(1, 150),
    side=st.sampled_from(["buy", "sell"]),
)
@settings(max_examples=150, deadline=None)
async def test_reducing_lets_through_only_orders_that_reduce(
    position: int, qty: int, side: str
) -> None:
    """``reducing``: an order goes through only when it is opposite to the position and not
    larger than it; exposure never grows."""
    reset_state()
    _, proxy, broker = state_broker(float(position), state="reducing")
    reduces = position != 0 and (side == "buy") == (position < 0) and qty <= abs(position)
    if reduces:
        await proxy.place_order("AAPL", qty, side, limit_price=1.0)
    else:
        with pytest.raises(TradingDisabledError) as info:
            await proxy.place_order("AAPL", qty, side, limit_price=1.0)
        assert info.value.rule == "trading.state"
    assert len(broker.sent) == int(reduces)


async def test_state_follows_api_and_settings_reload() -> None:
    """The API call and a reloaded ``trading.state`` change the state at once."""
    factory, proxy, broker = state_broker(0.0)
    await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    factory.set_trading_state("halted")
    with pytest.raises(TradingDisabledError):
        await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    factory._on_reload(make_config(live=True, paper=False, state="reducing"))
    assert factory.trading_state == "reducing"
    factory._on_reload(make_config(live=True, paper=False, state="active"))
    await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert len(broker.sent) == 2
    with pytest.raises(ValueError, match="not a trading state; use one of active"):
        factory.set_trading_state("paused")
    health = await proxy._health()
    assert health["trading_state"] == "active"


def test_state_is_shared_through_redis(redis_url: str) -> None:
    """Two workers sharing a Redis: a state set by one (or by the CLI) reaches the other
    within the poll interval."""
    import os
    import subprocess
    import sys
    import time

    from resilient.trading._state import TradingState

    prefix = f"test-state-{uuid.uuid4().hex[:8]}"
    base = current_config()
    config = replace(base, redis=replace(base.redis, url=redis_url, key_prefix=prefix))
    one, two = TradingState(config, poll_interval=0.05), TradingState(config, poll_interval=0.05)
    one.start()
    two.start()
    try:
        one.set("halted")
        deadline = time.monotonic() + 2.0
        while two.value != "halted" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert two.value == "halted"
        env = {
            **os.environ,
            "AI_TRADER_REDIS__URL": redis_url,
            "AI_TRADER_REDIS__KEY_PREFIX": prefix,
        }
        out = subprocess.run(
            [sys.executable, "-m", "resilient", "trading", "state", "reducing"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "trading state: reducing (from redis (cli))" in out.stdout
        deadline = time.monotonic() + 2.0
        while (one.value, two.value) != ("reducing", "reducing") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (one.value, two.value) == ("reducing", "reducing")
        late = TradingState(config)  # a worker started later reads it at start
        late.start()
        assert late.value == "reducing"
        late.stop()
    finally:
        one.stop()
        two.stop()
        import redis

        redis.Redis.from_url(redis_url).delete(f"{prefix}:trading:state")


def test_cli_without_redis_refuses_to_set() -> None:
    """Without ``redis.url`` the CLI shows the configured state and explains how to set it."""
    from resilient._cli import main

    assert main(["trading", "state"]) == 0
    assert main(["trading", "state", "halted"]) == 2


# -- 6. cancels always reach the broker that holds the order ----------------------------------


class CancelBroker(PositionBroker):
    """Reads fail (an outage of the account endpoint); cancels work."""

    async def get_account(self) -> dict[str, Any]:
        raise ConnectionResetError(104, "reset")


@pytest.mark.parametrize("state", ["active", "reducing", "halted"])
@pytest.mark.parametrize(("live", "paper"), [(False, False), (False, True), (True, False)])
async def test_cancel_never_refused_by_switches_or_states(
    live: bool, paper: bool, state: str
) -> None:
    """Live trading off (paper on or off, no paper broker), any trading state: the cancel
    reaches the broker."""
    factory = factory_for(make_config(live=live, paper=paper, state=state))
    broker = CancelBroker(0.0)
    proxy = factory.create_resilient_broker(broker, name())
    assert await proxy.cancel_order("o-7") is True
    assert broker.cancelled == ["o-7"]


async def test_cancel_goes_to_the_paper_broker_while_trading_on_paper() -> None:
    """With a paper broker registered and live trading off, the cancel goes where the orders
    went."""
    factory = factory_for(make_config())
    paper = PaperBroker(lambda s: 10.0)
    factory.register_paper_broker(paper)
    broker = CancelBroker(0.0)
    proxy = factory.create_resilient_broker(broker, name())
    await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    order_id = next(iter(paper.orders))
    assert await proxy.cancel_order(order_id) is False  # filled already: the paper answer
    assert broker.cancelled == []


async def test_cancel_attempted_while_the_circuit_is_open() -> None:
    """Reads opened the circuit; a cancel is still attempted (and recorded), a read is not."""
    import resilient
    from resilient.health import stats

    svc = name()
    config = make_config(live=True, paper=False, services={svc: {"failure_threshold": 2}})
    broker = CancelBroker(0.0)
    proxy = factory_for(config).create_resilient_broker(broker, svc)
    with pytest.raises((ConnectionResetError, resilient.CircuitOpenError)):
        await proxy.get_account()  # retried: two failures open the circuit
    assert resilient.breakers.get(svc).state == "open"
    with pytest.raises(resilient.CircuitOpenError):
        await proxy.get_account()
    before = len(stats(svc)._calls)
    assert await proxy.cancel_order("o-9") is True
    assert broker.cancelled == ["o-9"]
    assert len(stats(svc)._calls) == before + 1  # its outcome is recorded


# -- 7. order-rate throttle ------------------------------------------------------------------


async def test_order_rate_throttle_refuses_a_runaway_loop() -> None:
    """``trading.max_order_rate = "3/minute"``: the fourth order is refused at once with
    RiskLimitError, never queued; other services have their own count."""
    factory = factory_for(make_config(live=True, paper=False, max_order_rate="3/minute"))
    broker, other = LiveBroker(), LiveBroker()
    proxy = factory.create_resilient_broker(broker, name())
    second = factory.create_resilient_broker(other, name())
    for _ in range(3):
        await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    with pytest.raises(RiskLimitError) as info:
        await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert info.value.rule == "trading.max_order_rate"
    assert len(broker.sent) == 3
    await second.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert len(other.sent) == 1
    health = await proxy._health()
    assert health["orders_refused"] == 1


def test_order_rate_is_shared_through_redis(redis_url: str) -> None:
    """Two workers sharing a Redis share one order rate per service."""
    from resilient.trading._throttle import OrderThrottle

    prefix = f"test-rate-{uuid.uuid4().hex[:8]}"
    one = OrderThrottle("svc", "2/minute", redis_url=redis_url, key_prefix=prefix)
    two = OrderThrottle("svc", "2/minute", redis_url=redis_url, key_prefix=prefix)
    one.check()
    two.check()
    with pytest.raises(RiskLimitError):
        one.check()
    with pytest.raises(RiskLimitError):
        two.check()


def test_bad_order_rate_or_state_is_a_config_error() -> None:
    """A rate not in limits notation, or an unknown state, fails at load naming the key."""
    from resilient.config import ConfigError, ConfigManager

    for key, value in (("MAX_ORDER_RATE", "fast"), ("STATE", "paused")):
        manager = ConfigManager(
            "testing", cwd="/nonexistent", environ={f"AI_TRADER_TRADING__{key}": value}
        )
        with pytest.raises(ConfigError, match=f"trading.{key.lower()}"):
            manager.load_config()


# -- 8. business outcomes are not outages ---------------------------------------------------


def alpaca_error(status: int, message: str, code: int = 40010000) -> Exception:
    """alpaca-py's own APIError, as its REST client raises it."""
    import json

    import requests
    from alpaca.common.exceptions import APIError

    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"code": code, "message": message}).encode()
    http_error = requests.HTTPError(response=response)
    return APIError(json.dumps({"code": code, "message": message}), http_error)


@pytest.mark.parametrize(
    ("status", "message", "category"),
    [
        (403, "insufficient buying power", "broker_rejection"),
        (403, "market is closed", "broker_rejection"),
        (403, "asset XYZ is not tradable", "broker_rejection"),
        (403, "trade denied due to pattern day trading protection", "broker_rejection"),
        (403, "account is not allowed to short", "broker_rejection"),
        (403, "forbidden.", "authentication"),
        (401, "request is not authorized", "authentication"),
        (422, "client_order_id must be unique", "validation"),
        (404, "position does not exist", "data_unavailable"),
    ],
)
def test_alpaca_error_shapes(status: int, message: str, category: str) -> None:
    """alpaca-py's APIError: a 403 whose body refuses the order is a broker rejection, a bare
    403 stays an authentication error."""
    from resilient.errors import classify

    assert str(classify(alpaca_error(status, message))) == category


def test_alpaca_error_without_a_json_body_classifies() -> None:
    """APIError.code parses the body on every read; a non-JSON body must not break
    classification."""
    from alpaca.common.exceptions import APIError

    from resilient.errors import classify

    assert str(classify(APIError("<html>bad gateway</html>"))) == "internal"


@pytest.mark.parametrize(
    ("cls", "category", "not_sent"),
    [
        ("RateLimitExceeded", "rate_limit", True),
        ("DDoSProtection", "rate_limit", False),
        ("BadSymbol", "validation", False),
        ("InvalidOrder", "broker_rejection", False),
        ("InsufficientFunds", "broker_rejection", False),
        ("DuplicateOrderId", "broker_rejection", False),
        ("MarketClosed", "broker_rejection", False),
        ("ExchangeError", "broker_rejection", False),
        ("OrderNotFound", "data_unavailable", False),
        ("AuthenticationError", "authentication", False),
        ("PermissionDenied", "authentication", False),
        ("RequestTimeout", "timeout", False),
        ("ExchangeNotAvailable", "network", False),
        ("OnMaintenance", "network", False),
        ("NetworkError", "network", False),
    ],
)
def test_ccxt_exception_classes(cls: str, category: str, not_sent: bool) -> None:
    """ccxt's own exception classes map to the categories; RateLimitExceeded proves the
    request was not executed."""
    import ccxt

    from resilient.errors import classify, proves_not_sent

    exc = getattr(ccxt, cls)("binance {}")
    assert str(classify(exc)) == category
    assert proves_not_sent(exc) is not_sent


BUSINESS_ERRORS = st.sampled_from(
    [
        lambda: alpaca_error(403, "insufficient buying power", 40310000),
        lambda: alpaca_error(403, "market is closed"),
        lambda: alpaca_error(422, "qty must be > 0"),
        lambda: alpaca_error(404, "asset not found"),
        lambda: alpaca_error(400, "invalid order type"),
        lambda: __import__("ccxt").InsufficientFunds("binance Account has insufficient balance"),
        lambda: __import__("ccxt").BadSymbol("binance does not have market symbol XYZ"),
        lambda: __import__("ccxt").InvalidOrder("binance Order would immediately trigger"),
        lambda: __import__("ccxt").ExchangeError("kraken EOrder:Unknown position"),
    ]
)


class RejectingBroker:
    """Every order is refused on its merits (the next error of ``errors``); reads and cancels
    work. No position read: nothing succeeds between two orders."""

    def __init__(self, errors: list[Any]) -> None:
        self.errors = list(errors)
        self.sent: list[dict[str, Any]] = []

    async def cancel_order(self, order_id: str) -> bool:
        return True

    async def place_order(  # type: ignore[override]
        self, symbol: str, qty: float, side: str, limit_price: float, client_order_id: str
    ) -> dict[str, Any]:
        self.sent.append({"symbol": symbol})
        raise self.errors.pop(0)()

    async def get_account(self) -> dict[str, Any]:
        return {"cash": 1.0}


@given(errors=st.lists(BUSINESS_ERRORS, min_size=4, max_size=8))
@settings(max_examples=60, deadline=None)
async def test_business_errors_never_open_the_breaker(errors: list[Any]) -> None:
    """Any run of broker rejections, validation errors and 404s leaves the breaker closed, and
    cancels and account reads keep working."""
    import resilient

    reset_state()
    svc = name()
    config = make_config(live=True, paper=False, services={svc: {"failure_threshold": 3}})
    broker = RejectingBroker(errors)
    proxy = factory_for(config).create_resilient_broker(broker, svc)
    for count in range(1, len(errors) + 1):
        with pytest.raises(Exception) as info:
            await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
        assert not isinstance(info.value, resilient.CircuitOpenError | RiskLimitError)
        assert len(broker.sent) == count  # reached the broker once, no retry
    assert resilient.breakers.get(svc).state == "closed"
    assert await proxy.get_account() == {"cash": 1.0}
    assert await proxy.cancel_order("o-1") is True


class SymbolFeed:
    """Unknown symbols answer 404; known ones a price."""

    def __init__(self) -> None:
        self.prices = {"AAPL": 100.0}

    async def get_current_price(self, symbol: str) -> float:
        if symbol not in self.prices:
            raise alpaca_error(404, f"symbol {symbol} not found")
        return self.prices[symbol]


async def test_unknown_symbols_do_not_open_the_data_breaker() -> None:
    """Four 404s for unknown symbols: main_data stays closed and AAPL is served live."""
    import resilient
    from resilient.trading import StalePrice

    svc = name()
    factory = factory_for(make_config(services={svc: {"failure_threshold": 3}}))
    feed = SymbolFeed()
    data = factory.create_resilient_market_data(feed, svc)
    assert await data.get_current_price("AAPL") == 100.0
    for symbol in ("XX1", "XX2", "XX3", "XX4"):
        with pytest.raises(Exception, match="not found"):
            await data.get_current_price(symbol)
    assert resilient.breakers.get(svc).state == "closed"
    feed.prices["AAPL"] = 101.0
    price = await data.get_current_price("AAPL")
    assert price == 101.0 and not isinstance(price, StalePrice)


async def test_a_404_is_never_served_from_the_cache() -> None:
    """A position read that answered before and now answers 404 raises the 404 (or the
    proxy's zero), never the old position."""

    class Positions:
        def __init__(self) -> None:
            self.held = True

        async def get_open_position(self, symbol: str) -> dict[str, Any]:
            if not self.held:
                raise alpaca_error(404, "position does not exist", 40410000)
            return {"symbol": symbol, "qty": "10"}

    sdk = Positions()
    proxy = factory_for(make_config()).create_resilient_broker(sdk, name())
    assert (await proxy.get_open_position("AAPL"))["qty"] == "10"
    sdk.held = False
    with pytest.raises(Exception, match="position does not exist"):
        await proxy.get_open_position("AAPL")


def test_exclude_setting_adds_and_removes() -> None:
    """``services.<name>.exclude`` adds status codes/categories and removes defaults with
    "-"; a bad entry is a ConfigError naming the key."""
    from resilient.config import ConfigError
    from resilient.trading._settings import parse_exclude, service_settings

    svc = name()
    config = make_config(services={svc: {"exclude": [409, "-data_unavailable", "-404"]}})
    categories, added, removed = parse_exclude(service_settings(config, svc).exclude)
    assert "data_unavailable" not in categories and "broker_rejection" in categories
    assert added == {409} and removed == {404}
    bad = make_config(services={svc: {"exclude": ["brokers"]}})
    with pytest.raises(ConfigError, match=f"services.{svc}.exclude"):
        service_settings(bad, svc)


async def test_removed_exclusion_counts_again() -> None:
    """With ``exclude = ["-404", "-data_unavailable"]`` 404s count against the breaker."""
    import resilient

    svc = name()
    config = make_config(
        services={svc: {"failure_threshold": 2, "exclude": ["-404", "-data_unavailable"]}}
    )
    data = factory_for(config).create_resilient_market_data(SymbolFeed(), svc)
    for symbol in ("XX1", "XX2"):
        with pytest.raises(Exception):  # noqa: B017 - the 404 or the open circuit
            await data.get_current_price(symbol)
    assert resilient.breakers.get(svc).state == "open"


# -- 9. a recovered order is a success --------------------------------------------------------


class LossyBroker:
    """Records every new order; a scripted step per attempt: ``ok``, ``lost`` (recorded, then
    the answer times out), ``reset`` (recorded, then the connection resets) or ``refused``.
    A repeated client order id is rejected with a 422 (Alpaca's behaviour)."""

    def __init__(self, script: list[str] | None = None, *, visible_after: int = 0) -> None:
        self.script = list(script or [])
        self.orders: list[dict[str, Any]] = []
        self.lookups = 0
        self.visible_after = visible_after  # look-ups that answer "not found" first
        self.posts = 0

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        from resilient._demo_services import VendorHTTPError

        self.posts += 1
        step = self.script.pop(0) if self.script else "ok"
        if step == "refused":
            raise ConnectionRefusedError(111, "refused")
        if any(o["client_order_id"] == client_order_id for o in self.orders if client_order_id):
            raise VendorHTTPError(422, "client_order_id must be unique")
        order = {"id": f"o-{len(self.orders) + 1}", "client_order_id": client_order_id}
        self.orders.append(order)
        if step == "lost":
            raise TimeoutError("read timed out")
        if step == "reset":
            raise ConnectionResetError(104, "Connection reset by peer")
        return order

    async def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        self.lookups += 1
        if self.lookups <= self.visible_after:
            return None
        return next((o for o in self.orders if o["client_order_id"] == client_order_id), None)

    async def get_orders(self) -> list[dict[str, Any]]:
        return list(self.orders)

    async def get_current_price(self, symbol: str) -> float:
        return 10.0


async def test_recovered_orders_are_successes_for_breaker_errors_and_health() -> None:
    """Two lost answers recovered by look-up, breaker threshold 3: the circuit stays closed,
    no error is counted, the component stays healthy and the next orders go through."""
    import resilient
    from resilient.errors import tracker

    svc = name()
    config = make_config(live=True, paper=False, services={svc: {"failure_threshold": 3}})
    broker = LossyBroker(["lost", "ok", "lost", "ok"])
    proxy = factory_for(config).create_resilient_broker(broker, svc)
    errors_before = tracker.snapshot()["total_errors"]
    first = await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    second = await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert first == broker.orders[0] and second == broker.orders[1]
    snap = resilient.breakers.get(svc).snapshot()
    assert snap.state == "closed"
    assert snap.failure_count == 0
    assert tracker.snapshot()["total_errors"] == errors_before
    assert (await proxy._health())["status"] == "healthy"
    await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert len(broker.orders) == 3


# -- 10. unknown outcomes are tracked and reconciled -------------------------------------------


async def test_fresh_order_not_found_at_first_is_found_by_later_lookups() -> None:
    """The broker reports the fresh order as not found twice; the third look-up finds it."""
    svc = name()
    config = make_config(
        live=True, paper=False, order_lookup_attempts=3, order_lookup_backoff=0.001
    )
    broker = LossyBroker(["lost", "lost", "lost"], visible_after=2)
    proxy = factory_for(config).create_resilient_broker(broker, svc)
    found = await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert found == broker.orders[0]
    assert broker.lookups == 3
    assert len(broker.orders) == 1


@pytest.mark.parametrize("step", ["lost", "reset"])
async def test_unknown_outcome_raises_order_status_unknown_and_is_reconciled(step: str) -> None:
    """Look-ups that never find the order: OrderStatusUnknown carrying the client order id;
    the order is in health with its age until factory.reconcile() finds it."""
    from resilient.trading import OrderStatusUnknown

    svc = name()
    config = make_config(
        live=True, paper=False, order_lookup_attempts=2, order_lookup_backoff=0.001
    )
    broker = LossyBroker([step] * 3, visible_after=10**6)
    factory = factory_for(config)
    proxy = factory.create_resilient_broker(broker, svc)
    with pytest.raises(OrderStatusUnknown) as info:
        await proxy.place_order("AAPL", 3, "buy", limit_price=10.0)
    cid = info.value.client_order_id
    assert cid is not None and cid == broker.orders[0]["client_order_id"]
    assert len(broker.orders) == 1  # retried under the same id, never twice
    health = await proxy._health()
    assert health["status"] == "degraded"
    assert [o["client_order_id"] for o in health["orders_unknown"]] == [cid]
    assert health["orders_unknown"][0]["age_seconds"] >= 0
    assert factory.orders_unknown[0]["client_order_id"] == cid
    system = await factory.get_orchestrator().get_system_health()
    assert [o["client_order_id"] for o in system["orders_unknown"]] == [cid]
    from resilient import metrics

    exported = metrics.generate_latest().decode()
    assert f'resilient_orders_unknown_total{{service="{svc}"}} 1.0' in exported
    assert proxy.tracked_positions == {}
    broker.visible_after = 0
    report = await factory.reconcile()
    assert [o["client_order_id"] for o in report["found"]] == [cid]
    assert factory.orders_unknown == []
    assert proxy.tracked_positions == {"AAPL": 3}  # found: counted as sent
    assert (await proxy._health())["status"] == "healthy"


async def test_reconcile_matches_open_orders_without_a_lookup_method() -> None:
    """A broker without a look-up by client id: its open orders settle the unknown order."""
    from resilient.trading import OrderStatusUnknown

    class NoLookup(LossyBroker):
        get_order_by_client_order_id = None  # type: ignore[assignment]

    svc = name()
    config = make_config(live=True, paper=False, order_lookup_backoff=0.001)
    broker = NoLookup(["reset"] * 3)
    factory = factory_for(config)
    proxy = factory.create_resilient_broker(broker, svc)
    with pytest.raises(OrderStatusUnknown):
        await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    report = await factory.reconcile()
    assert len(report["found"]) == 1 and factory.orders_unknown == []


async def test_unkeyed_order_with_lost_answer_is_unknown_not_a_failure() -> None:
    """Without an idempotency key a lost answer is not retried and is reported unknown."""
    from resilient.trading import OrderStatusUnknown

    class NoKey:
        def __init__(self) -> None:
            self.orders = 0

        async def place_order(self, symbol: str, qty: float, side: str = "buy") -> None:
            self.orders += 1
            raise ConnectionResetError(104, "reset")

        async def get_current_price(self, symbol: str) -> float:
            return 10.0

    broker = NoKey()
    proxy = factory_for(make_config(live=True, paper=False)).create_resilient_broker(broker, name())
    with pytest.raises(OrderStatusUnknown) as info:
        await proxy.place_order("AAPL", 1, "buy")
    assert info.value.client_order_id is None
    assert isinstance(info.value.__cause__, ConnectionResetError)
    assert broker.orders == 1


async def test_definitive_errors_are_raised_as_they_are() -> None:
    """A rejection or a refused connection proves the outcome: no look-up, the error itself."""

    class Refusing(LossyBroker):
        async def place_order(  # type: ignore[override]
            self, symbol: str, qty: float, side: str, limit_price: float, client_order_id: str
        ) -> dict[str, Any]:
            self.posts += 1
            raise alpaca_error(403, "insufficient buying power")

    broker = Refusing()
    proxy = factory_for(make_config(live=True, paper=False)).create_resilient_broker(broker, name())
    with pytest.raises(Exception, match="insufficient buying power"):
        await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
    assert broker.lookups == 0 and broker.posts == 1


@pytest.mark.parametrize(
    "url", ["redis+cluster://127.0.0.1:1,127.0.0.1:2", "redis://127.0.0.1:1/0"]
)
def test_order_rate_still_throttles_when_redis_cannot_count(url: str) -> None:
    """A Redis URL the limits library does not take, or a Redis that is down: the throttle
    counts in memory and still refuses (a risk rule never fails open)."""
    from resilient.trading._throttle import OrderThrottle

    throttle = OrderThrottle("svc", "1/minute", redis_url=url, timeout=0.05)
    throttle.check()
    with pytest.raises(RiskLimitError, match="max_order_rate"):
        throttle.check()


async def test_cancel_of_a_live_order_while_trading_on_paper_reaches_the_live_broker() -> None:
    """Live trading switched off after an order was placed live: the paper broker does not know
    it, so the cancel goes to the live broker that holds it."""
    factory = factory_for(make_config())
    factory.register_paper_broker(PaperBroker(lambda s: 10.0))
    broker = CancelBroker(0.0)
    proxy = factory.create_resilient_broker(broker, name())
    assert await proxy.cancel_order("live-order-1") is True
    assert broker.cancelled == ["live-order-1"]


def test_callable_objects_are_guarded_and_events_are_not_wrapped() -> None:
    """A callable endpoint object is wrapped (it may place an order: refused with live trading
    off); an event object (``+=``) is left to the wrapped client."""

    class Endpoint:
        def __init__(self) -> None:
            self.calls = 0

        def __call__(self, *args: Any) -> str:
            self.calls += 1
            return "sent"

    class Event:
        def __init__(self) -> None:
            self.handlers: list[Any] = []

        def __call__(self, *args: Any) -> None:
            for handler in self.handlers:
                handler(*args)

        def __iadd__(self, handler: Any) -> Event:
            self.handlers.append(handler)
            return self

    class Sdk:
        def __init__(self) -> None:
            self.dispatch = Endpoint()
            self.fills = Event()

    sdk = Sdk()
    proxy = factory_for(make_config()).create_resilient_broker(sdk, name())
    with pytest.raises(TradingDisabledError):
        proxy.dispatch("AAPL", 1)
    assert sdk.dispatch.calls == 0
    seen: list[Any] = []
    proxy.fills += seen.append
    sdk.fills("fill")
    assert seen == ["fill"]


async def test_unknown_orders_are_rechecked_periodically() -> None:
    """After initialize_resilience() the factory re-checks unknown orders every
    resilience.health_check_interval, without being asked."""
    import asyncio

    from resilient.trading import OrderStatusUnknown

    base = make_config(live=True, paper=False, order_lookup_attempts=1)
    config = replace(base, resilience=replace(base.resilience, health_check_interval=0.05))
    factory = factory_for(config)
    await factory.initialize_resilience()
    try:
        broker = LossyBroker(["reset"] * 3, visible_after=10**6)
        proxy = factory.create_resilient_broker(broker, name())
        with pytest.raises(OrderStatusUnknown):
            await proxy.place_order("AAPL", 1, "buy", limit_price=10.0)
        assert len(factory.orders_unknown) == 1
        broker.visible_after = 0
        for _ in range(100):
            if not factory.orders_unknown:
                break
            await asyncio.sleep(0.02)
        assert factory.orders_unknown == []
    finally:
        await factory.shutdown()
