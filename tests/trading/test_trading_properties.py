"""Property: whatever the faults, an order intent reaches a broker at most once, never above the
risk limits, never live while live trading is off, never growing exposure while the trading
state is halted or reducing, and a cancel is never refused by a switch, a state or an open
circuit (at least 1,000 random fault schedules, which include unvaluable quantities, blank
client order ids, methods of unknown kind and business errors)."""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import resilient
from resilient import FakeClock, RiskLimitError, get_clock, use_clock
from resilient._demo_services import VendorHTTPError
from resilient.config import current_config
from resilient.trading import OrderStatusUnknown
from resilient.trading._context import TradingContext
from resilient.trading._proxy import ResilientService
from resilient.trading._settings import service_settings

EXAMPLES = int(os.environ.get("RESILIENT_PROPERTY_EXAMPLES", "1000"))
ORDER_TIMEOUT = 5.0

# What one attempt to place an order meets. "before" faults happen before the broker records
# the order, "after" faults after it (the answer is lost one way or another).
FAULTS = (
    "ok",
    "refused",  # connection refused: provably never sent
    "http_429",  # rate limited: provably not acted on
    "http_503_before",  # 503 without recording: the client cannot know that
    "reset_after",  # recorded, then the connection resets
    "lost_timeout",  # recorded, then the read times out
    "hang",  # recorded, then no answer before the order timeout
    "http_503_after",  # recorded, then a 503 from a proxy in front of the broker
    "reject_403",  # a business answer: insufficient buying power (nothing recorded)
    "invalid_422",  # a business answer: the order is invalid (nothing recorded)
)
# Quantities no order may be valued with: each must be refused before the broker is called.
UNVALUABLE = (math.nan, Decimal("NaN"), math.inf, -5, 0, "lots", "", Decimal("-1"))


class ReadTimeout(OSError):
    """A synchronous HTTP client's read timeout (requests' ReadTimeout is an OSError too)."""


class Broker:
    """A fake broker playing a fault schedule, one fault per attempt."""

    read_timeout: type[Exception] = TimeoutError

    def __init__(self, *, live: bool, dedupe: str, prices: dict[str, float]) -> None:
        self.paper = not live
        self.dedupe = dedupe
        self.prices = prices
        self.schedule: list[str] = []
        self.orders: list[dict[str, Any]] = []
        self.positions: dict[str, float] = {}
        self.cancels: list[str] = []

    def _record(
        self,
        symbol: str,
        qty: float,
        side: str,
        limit_price: float | None,
        client_order_id: str | None,
    ) -> tuple[dict[str, Any], str]:
        """Play the next fault up to recording the order; return it and the fault left."""
        fault = self.schedule.pop(0) if self.schedule else "ok"
        if fault == "refused":
            raise ConnectionRefusedError(111, "Connection refused")
        if fault == "http_429":
            raise VendorHTTPError(429, "too many requests", {"Retry-After": "0.5"})
        if fault == "http_503_before":
            raise VendorHTTPError(503, "unavailable")
        if fault == "reject_403":
            raise VendorHTTPError(403, "insufficient buying power")
        if fault == "invalid_422":
            raise VendorHTTPError(422, "invalid order type")
        if client_order_id is not None and not client_order_id.strip():
            client_order_id = None  # a blank id is no id, as at real brokers
        if client_order_id is not None:
            for order in self.orders:
                if order["client_order_id"] == client_order_id:
                    if self.dedupe == "reject":
                        raise VendorHTTPError(422, "client_order_id must be unique")
                    return order, "ok"
        price = limit_price if limit_price is not None else self.prices[symbol]
        order = {
            "client_order_id": client_order_id,
            "symbol": symbol,
            "qty": qty,
            "side": side,
            "price": price,
        }
        self.orders.append(order)
        self.positions[symbol] = self.positions.get(symbol, 0.0) + (qty if side == "buy" else -qty)
        if fault == "reset_after":
            raise ConnectionResetError(104, "Connection reset by peer")
        if fault == "lost_timeout":
            raise self.read_timeout("read timed out")
        if fault == "http_503_after":
            raise VendorHTTPError(503, "bad gateway")
        return order, fault

    def _order_of(self, client_order_id: str) -> dict[str, Any] | None:
        return next((o for o in self.orders if o["client_order_id"] == client_order_id), None)


class AsyncBroker(Broker):
    async def _place(self, *args: Any) -> dict[str, Any]:
        await asyncio.sleep(0)
        order, fault = self._record(*args)
        if fault == "hang":  # no answer before the order timeout: the call is cancelled
            await get_clock().asleep(ORDER_TIMEOUT * 10)
        return order

    async def get_position(self, symbol: str) -> float:
        return self.positions.get(symbol, 0.0)

    async def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        return self._order_of(client_order_id)

    async def cancel_order(self, order_id: str) -> bool:
        self.cancels.append(order_id)
        return True

    async def route(
        self, symbol: str, qty: float, side: str = "buy", limit_price: float | None = None
    ) -> dict[str, Any]:
        """A method of unknown kind that places an order (a venue-specific entry point)."""
        return await self._place(symbol, qty, side, limit_price, None)


class SyncBroker(Broker):
    read_timeout = ReadTimeout

    def _place(self, *args: Any) -> dict[str, Any]:
        order, fault = self._record(*args)
        if fault == "hang":
            get_clock().sleep(ORDER_TIMEOUT * 10)
        return order

    def get_position(self, symbol: str) -> float:
        return self.positions.get(symbol, 0.0)

    def get_order_by_client_order_id(self, client_order_id: str) -> dict[str, Any] | None:
        return self._order_of(client_order_id)

    def cancel_order(self, order_id: str) -> bool:
        self.cancels.append(order_id)
        return True

    def route(
        self, symbol: str, qty: float, side: str = "buy", limit_price: float | None = None
    ) -> dict[str, Any]:
        """A method of unknown kind that places an order (a venue-specific entry point)."""
        return self._place(symbol, qty, side, limit_price, None)


class KeyBroker(AsyncBroker):
    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        return await self._place(symbol, qty, side, limit_price, client_order_id)


class NoKeyBroker(AsyncBroker):
    async def place_order(
        self, symbol: str, qty: float, side: str = "buy", limit_price: float | None = None
    ) -> dict[str, Any]:
        return await self._place(symbol, qty, side, limit_price, None)


class SyncKeyBroker(SyncBroker):
    def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        return self._place(symbol, qty, side, limit_price, client_order_id)


class SyncNoKeyBroker(SyncBroker):
    def place_order(
        self, symbol: str, qty: float, side: str = "buy", limit_price: float | None = None
    ) -> dict[str, Any]:
        return self._place(symbol, qty, side, limit_price, None)


BROKERS: dict[tuple[bool, bool], type[Broker]] = {
    (False, True): KeyBroker,
    (False, False): NoKeyBroker,
    (True, True): SyncKeyBroker,
    (True, False): SyncNoKeyBroker,
}


class SyncFeed:
    def __init__(self, prices: dict[str, float]) -> None:
        self.prices = prices

    def get_current_price(self, symbol: str) -> float:
        return self.prices[symbol]


class Feed:
    def __init__(self, prices: dict[str, float]) -> None:
        self.prices = prices

    async def get_current_price(self, symbol: str) -> float:
        return self.prices[symbol]


@dataclass(frozen=True)
class Intent:
    symbol: str
    qty: Any  # a positive int, or one of UNVALUABLE
    side: str
    limit: float | None
    caller_id: str  # "none", "fresh" or "blank"
    method: str  # "place_order", or "route" (a method of unknown kind)
    schedule: tuple[str, ...]


@dataclass(frozen=True)
class Scenario:
    sync: bool
    live: bool
    paper: bool
    paper_registered: bool
    keyed: bool
    dedupe: str
    max_order: float
    max_position: float
    held: int
    prices: tuple[float, float]
    intents: tuple[Intent, ...]
    state: str
    open_circuit: bool


SYMBOLS = ("AAA", "BBB")


INTENTS = st.lists(
    st.builds(
        Intent,
        symbol=st.sampled_from(SYMBOLS),
        qty=st.integers(1, 300) | st.sampled_from(UNVALUABLE),
        side=st.sampled_from(("buy", "sell")),
        limit=st.none() | st.floats(1.0, 200.0).map(lambda p: round(p, 2)),
        caller_id=st.sampled_from(("none", "fresh", "blank")),
        method=st.sampled_from(("place_order", "place_order", "place_order", "route")),
        schedule=st.lists(st.sampled_from(FAULTS), max_size=4).map(tuple),
    ).filter(lambda i: i.method == "place_order" or isinstance(i.qty, int)),
    min_size=1,
    max_size=4,
).map(tuple)
MAX_ORDER = st.sampled_from((1_000.0, 5_000.0, 10_000.0))
PRICES = st.tuples(st.floats(1.0, 100.0), st.floats(1.0, 100.0))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    live = draw(st.booleans())
    paper = False if live else draw(st.booleans())
    max_order = draw(MAX_ORDER)
    return Scenario(
        sync=draw(st.booleans()),
        live=live,
        paper=paper,
        paper_registered=draw(st.booleans()),
        keyed=draw(st.booleans()),
        dedupe=draw(st.sampled_from(("return", "reject"))),
        max_order=max_order,
        max_position=max_order * draw(st.sampled_from((1, 3, 10))),
        held=draw(st.integers(-50, 50)),
        prices=draw(PRICES),
        intents=draw(INTENTS),
        state=draw(st.sampled_from(("active", "active", "reducing", "halted"))),
        open_circuit=draw(st.booleans()),
    )


def within_limits(order: dict[str, Any], before: float, after: float, sc: Scenario) -> bool:
    price = order["price"]
    if order["qty"] * price > sc.max_order + 1e-6:
        return False
    grows = abs(after) > abs(before)
    return not grows or abs(after) * price <= sc.max_position + 1e-6


async def play(sc: Scenario) -> None:
    base = current_config()
    config = replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=sc.live,
            paper_trading_enabled=sc.paper,
            risk_limits_enforced=True,
        ),
        trading=replace(
            base.trading,
            risk_check_enabled=True,
            max_order_size=sc.max_order,
            max_position_size=sc.max_position,
            default_order_timeout=ORDER_TIMEOUT,
            state=sc.state,
            order_lookup_backoff=0.01,
        ),
        extra={
            **base.extra,
            "services": {"defaults": {"rate_limit": "", "failure_threshold": 1000}},
        },
    )
    prices = dict(zip(SYMBOLS, sc.prices, strict=True))
    context = TradingContext(config)
    context.market_data.append(SyncFeed(prices) if sc.sync else Feed(prices))
    live = BROKERS[sc.sync, sc.keyed](live=True, dedupe=sc.dedupe, prices=prices)
    live.positions = {"AAA": float(sc.held)}
    paper = BROKERS[sc.sync, True](live=False, dedupe=sc.dedupe, prices=prices)
    paper.positions = dict(live.positions)
    if sc.paper_registered:
        context.register_paper_broker(paper)
    name = f"prop_{uuid.uuid4().hex}"
    proxy = ResilientService(
        live, name, role="broker", settings=service_settings(config, name), context=context
    )
    try:
        for intent in sc.intents:
            target = live if sc.live else paper
            target.schedule = list(intent.schedule)
            before_live, before_paper = len(live.orders), len(paper.orders)
            held_before = target.positions.get(intent.symbol, 0.0)
            kwargs: dict[str, Any] = {}
            if intent.limit is not None:
                kwargs["limit_price"] = intent.limit
            if intent.caller_id != "none" and sc.keyed and intent.method == "place_order":
                kwargs["client_order_id"] = uuid.uuid4().hex if intent.caller_id == "fresh" else " "
            refused = False
            try:
                result = getattr(proxy, intent.method)(
                    intent.symbol, intent.qty, intent.side, **kwargs
                )
                if not sc.sync:
                    await result
                ok = True
            except RiskLimitError:
                ok, refused = False, True
            except (
                resilient.CircuitOpenError,
                OrderStatusUnknown,
                VendorHTTPError,
                OSError,
                TimeoutError,
            ):
                ok = False
            new_live = live.orders[before_live:]
            new_paper = paper.orders[before_paper:]
            # never two orders for one intent
            assert len(new_live) + len(new_paper) <= 1, (intent, new_live, new_paper)
            # never a live order while live trading is off
            if not sc.live:
                assert new_live == [], intent
            # a successful call placed exactly one order
            if ok:
                assert len(new_live) + len(new_paper) == 1, intent
            after = target.positions.get(intent.symbol, 0.0)
            # an order that cannot be valued never reaches a broker
            if not isinstance(intent.qty, int):
                assert refused and new_live == new_paper == [], intent
            # no order in a halted or reducing state increases exposure
            if sc.state == "halted":
                assert new_live == new_paper == [], intent
            if sc.state == "reducing":
                assert abs(after) <= abs(held_before) + 1e-9, (intent, held_before, after)
            # never above the limits (a method of unknown kind is guarded by switches only)
            for order in new_live + new_paper:
                if intent.method == "place_order":
                    assert within_limits(order, held_before, after, sc), (order, held_before, sc)
        # a cancel is never refused by a switch, a state or an open circuit
        if sc.open_circuit:
            resilient.breakers.get(name).force_open()
        cancelled = proxy.cancel_order("order-1")
        if not sc.sync:
            cancelled = await cancelled
        assert cancelled is True
        assert len(live.cancels) + len(paper.cancels) == 1
    finally:
        resilient.breakers.remove(name)


@pytest.mark.slow
def test_orders_never_duplicated_over_random_fault_schedules() -> None:
    """≥ 1,000 random schedules: ≤ 1 order per intent, within limits, never live when off."""
    played: list[int] = []
    seen: Counter[str] = Counter()
    with use_clock(FakeClock()), asyncio.Runner() as runner:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(scenarios())
        def check(sc: Scenario) -> None:
            played.append(1)
            seen[f"state {sc.state}"] += 1
            seen["circuit forced open"] += sc.open_circuit
            for intent in sc.intents:
                seen[f"method {intent.method}"] += 1
                seen[f"client order id {intent.caller_id}"] += 1
                seen["unvaluable quantity"] += not isinstance(intent.qty, int)
                seen["business error"] += bool({"reject_403", "invalid_422"} & set(intent.schedule))
            runner.run(play(sc))

        check()
    assert len(played) >= EXAMPLES
    print("scenario mix:", dict(sorted(seen.items())))
    if EXAMPLES >= 200:  # the schedules really contain every kind of hostile input
        for kind in (
            "state halted",
            "state reducing",
            "method route",
            "client order id blank",
            "unvaluable quantity",
            "business error",
            "circuit forced open",
        ):
            assert seen[kind] > 0, kind
