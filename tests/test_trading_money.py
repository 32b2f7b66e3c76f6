"""Money safety of the broker proxy: what never reaches a broker, what always does, and how
outcomes are counted (one section per rule)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import TradingDisabledError
from resilient.config import Config, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory
from resilient.testing import zero_wait_retries
from resilient.testing._isolation import reset_state
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
        trading=replace(base.trading, risk_check_enabled=True, **trading),
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
