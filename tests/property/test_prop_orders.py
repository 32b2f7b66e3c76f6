"""Order-safety properties: whatever fails, however often, one intent executes at most once;
the order path fails closed (unvaluable sizes, unknown methods, trading states) and cancels
always get through."""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import replace
from decimal import Decimal
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import RiskLimitError, breakers, resilient, retry
from resilient.config import current_config
from resilient.errors import is_transient, proves_not_sent
from resilient.testing import (
    FaultSchedule,
    FlakyService,
    Outcome,
    assert_no_call_while_open,
    assert_no_duplicate_orders,
    reset_state,
    use_fake_clock,
)
from resilient.testing.strategies import fault_schedules, outcomes
from resilient.trading._methods import guess_kind

_names = itertools.count()
schedules = fault_schedules(max_size=10, max_latency=2.0, hang_seconds=20.0)


class Broker:
    """A fake broker: executes every order it receives, de-duplicating by client order id."""

    def __init__(self) -> None:
        self.book: list[dict[str, Any]] = []
        self._by_key: dict[str, dict[str, Any]] = {}

    def place_order(
        self, symbol: str, qty: float, *, intent: int, client_order_id: str | None = None
    ) -> dict[str, Any]:
        if client_order_id is not None and client_order_id in self._by_key:
            return self._by_key[client_order_id]
        order = {"id": len(self.book), "symbol": symbol, "qty": qty, "intent": intent}
        order["client_order_id"] = client_order_id
        self.book.append(order)
        if client_order_id is not None:
            self._by_key[client_order_id] = order
        return order


def expected_attempts(schedule: FaultSchedule, max_attempts: int, keyed: bool) -> int:
    """Attempts a safe order retry makes: it retries a transient failure only when the order
    carries an idempotency key or the failure proves the order never left."""
    for attempt, outcome in enumerate(schedule, start=1):
        exc = outcome.make_exception()
        if exc is None or attempt == max_attempts or not is_transient(exc):
            return attempt
        if not keyed and not proves_not_sent(exc):
            return attempt
    return min(len(schedule) + 1, max_attempts)


@given(
    schedule=schedules,
    max_attempts=st.integers(min_value=1, max_value=6),
    keyed=st.booleans(),
)
@examples(ci=2500)
def test_order_retry_never_duplicates(
    schedule: FaultSchedule, max_attempts: int, keyed: bool
) -> None:
    """``retry(idempotent=<has a key>)`` on an order: the broker's book never holds two orders
    of one intent, and the retry still tries again after failures that prove nothing was sent."""
    broker = Broker()
    service = FlakyService(schedule)
    place = retry(
        max_attempts=max_attempts,
        initial_delay=0.5,
        idempotent=lambda args, kwargs: kwargs.get("client_order_id") is not None,
        budget=False,
    )(service.wrap(broker.place_order))
    with use_fake_clock(), contextlib.suppress(Exception):
        place("AAPL", 10, intent=1, client_order_id="t-1" if keyed else None)
    assert len(service.calls) == expected_attempts(schedule, max_attempts, keyed)
    assert_no_duplicate_orders(broker.book, intent=lambda o: o["intent"])
    if not keyed:
        # without a key, the calls themselves must not have reached the broker twice
        assert_no_duplicate_orders(service.calls, intent=lambda c: c.kwargs["intent"])
    if any(not c.failed for c in service.calls):
        assert len(broker.book) == 1


@given(
    intents=st.lists(
        st.tuples(st.integers(min_value=0, max_value=80).map(lambda q: q / 4), st.booleans()),
        min_size=1,
        max_size=10,
    ),
    schedule=st.lists(outcomes(max_latency=2.0, hang_seconds=20.0), max_size=40),
    options=st.fixed_dictionaries(
        {
            "failure_threshold": st.integers(min_value=1, max_value=4),
            "reset_timeout": st.sampled_from([2.0, 30.0]),
            "max_attempts": st.integers(min_value=1, max_value=5),
        }
    ),
)
@examples(ci=2000)
async def test_order_stack_never_duplicates(
    intents: list[tuple[float, bool]], schedule: list[Outcome], options: dict[str, Any]
) -> None:
    """Many orders through breaker + retry over time: every intent executes at most once and no
    order passes an open circuit."""
    broker = Broker()
    service = FlakyService(schedule)
    name = f"prop-orders-{next(_names)}"
    service.observe = lambda: breakers.get(name).state

    async def place_order(symbol: str, qty: float, **kwargs: Any) -> dict[str, Any]:
        return broker.place_order(symbol, qty, **kwargs)

    place = resilient(
        name,
        idempotent=lambda args, kwargs: kwargs.get("client_order_id") is not None,
        initial_delay=0.25,
        max_delay=2.0,
        budget=False,
        **options,
    )(service.wrap(place_order))
    try:
        with use_fake_clock() as clock:
            for intent, (wait, keyed) in enumerate(intents):
                clock.advance(wait)
                key = f"t-{intent}" if keyed else None
                with contextlib.suppress(Exception):
                    await place("AAPL", 10, intent=intent, client_order_id=key)
        assert_no_duplicate_orders(broker.book, intent=lambda o: o["intent"])
        unkeyed = [c for c in service.calls if c.kwargs["client_order_id"] is None]
        assert_no_duplicate_orders(unkeyed, intent=lambda c: c.kwargs["intent"])
        assert_no_call_while_open(service.calls)
    finally:
        breakers.remove(name)


class KeyedBroker:
    """A broker SDK whose order call takes a client order id (and de-duplicates by it)."""

    def __init__(self) -> None:
        self.executed: list[dict[str, Any]] = []

    async def place_order(
        self,
        symbol: str,
        qty: float,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
    ) -> dict[str, Any]:
        for order in self.executed:
            if client_order_id is not None and order["client_order_id"] == client_order_id:
                return order
        order = {"symbol": symbol, "qty": qty, "client_order_id": client_order_id}
        self.executed.append(order)
        return order

    async def get_position(self, symbol: str) -> float:
        return sum(o["qty"] for o in self.executed if o["symbol"] == symbol)


class UnkeyedBroker(KeyedBroker):
    """A broker SDK with no idempotency key at all: only provably unsent orders may be retried."""

    async def place_order(  # type: ignore[override]
        self, symbol: str, qty: float, side: str = "buy", limit_price: float | None = None
    ) -> dict[str, Any]:
        return await super().place_order(symbol, qty, side, limit_price)


@given(
    schedule=fault_schedules(max_size=12, max_latency=2.0, hang_seconds=60.0),
    keyed=st.booleans(),
    intents=st.integers(min_value=1, max_value=4),
)
@examples(ci=1000)
async def test_resilient_broker_never_duplicates(
    schedule: FaultSchedule, keyed: bool, intents: int
) -> None:
    """The broker proxy of ``ResilienceFactory`` over a flaky SDK: however the SDK fails, each
    order intent is executed at most once, and an order reported placed was placed once."""
    from resilient.health import HealthRegistry
    from resilient.integration import ResilienceFactory

    reset_state(forget_breakers=True)
    sdk = KeyedBroker() if keyed else UnkeyedBroker()
    service = FlakyService(schedule)
    factory = ResilienceFactory(registry=HealthRegistry(), logging=False, database=False)
    broker = factory.create_resilient_broker(
        service.wrap_object(sdk, methods=["place_order"]), "prop_broker", paper=True
    )
    placed: list[int] = []
    with use_fake_clock() as clock:
        for intent in range(intents):
            clock.advance(61.0)  # past the breaker's reset timeout
            with contextlib.suppress(Exception):
                await broker.place_order("AAPL", intent + 1, "buy", limit_price=10.0)
                placed.append(intent)
    assert_no_duplicate_orders(sdk.executed, intent=lambda order: order["qty"])
    if not keyed:
        assert_no_duplicate_orders(service.calls, intent=lambda call: call.args[1])
    executed = {order["qty"] for order in sdk.executed}
    assert {intent + 1 for intent in placed} <= executed
    reset_state(forget_breakers=True)


# -- the order path fails closed -------------------------------------------------------------

UNVALUABLE = st.one_of(
    st.sampled_from([math.nan, Decimal("NaN"), math.inf, -math.inf, 0, -3, "lots", "", " ", None]),
    st.floats(allow_nan=True, allow_infinity=True).filter(lambda x: not 0 < x < math.inf),
    st.decimals(max_value=0, places=4),
    st.text(alphabet="abc -", max_size=6),
)
SIZE_FIELDS = st.sampled_from(["qty", "quantity", "amount", "volume", "size", "notional"])
BUSINESS = st.sampled_from(
    [
        (403, "insufficient buying power"),
        (403, "market is closed"),
        (422, "qty must be > 0"),
        (400, "invalid order type"),
        (404, "asset not found"),
    ]
)
UNKNOWN_NAMES = st.from_regex(r"\A[a-z][a-z0-9_]{2,16}\Z").filter(
    lambda n: guess_kind(n, default=None) is None
)


def _config(*, live: bool, paper: bool, state: str, threshold: int = 1000) -> Any:
    base = current_config()
    return replace(
        base,
        features=replace(
            base.features,
            live_trading_enabled=live,
            paper_trading_enabled=paper,
            risk_limits_enforced=True,
        ),
        trading=replace(base.trading, risk_check_enabled=True, state=state),
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={
            **base.extra,
            "services": {"defaults": {"rate_limit": "", "failure_threshold": threshold}},
        },
    )


class ClosedBroker:
    """A live broker recording what reaches it; ``errors`` are raised by order calls."""

    def __init__(self, errors: list[tuple[int, str]] | None = None) -> None:
        self.calls: list[str] = []
        self.errors = list(errors or [])

    async def place_order(
        self,
        symbol: str,
        side: str = "buy",
        limit_price: float | None = None,
        client_order_id: str | None = None,
        **sizes: Any,
    ) -> dict[str, Any]:
        from resilient._demo_services import VendorHTTPError

        self.calls.append("place_order")
        if self.errors:
            raise VendorHTTPError(*self.errors.pop(0))
        return {"client_order_id": client_order_id}

    async def cancel_order(self, order_id: str) -> bool:
        self.calls.append("cancel_order")
        return True

    async def get_position(self, symbol: str) -> float:
        return 0.0


def _factory(config: Any) -> Any:
    from resilient.health import HealthRegistry
    from resilient.integration import ResilienceFactory

    return ResilienceFactory(config, registry=HealthRegistry(), logging=False, database=False)


@given(
    value=UNVALUABLE,
    field=SIZE_FIELDS,
    live=st.booleans(),
    state=st.sampled_from(["active", "reducing"]),
)
@examples(ci=1000)
async def test_unvaluable_orders_never_reach_the_broker(
    value: Any, field: str, live: bool, state: str
) -> None:
    """Whatever the field and the switches, an order whose size is not a finite positive
    number is refused with RiskLimitError before the broker is called."""
    reset_state(forget_breakers=True)
    broker = ClosedBroker()
    proxy = _factory(_config(live=live, paper=True, state=state)).create_resilient_broker(
        broker, f"prop_{next(_names)}", paper=not live
    )
    with contextlib.suppress(RiskLimitError):
        await proxy.place_order("AAPL", "sell", limit_price=10.0, **{field: value})
        raise AssertionError("an unvaluable order was not refused")
    assert broker.calls == []


@given(
    method=UNKNOWN_NAMES,
    live=st.booleans(),
    state=st.sampled_from(["active", "reducing", "halted"]),
)
@examples(ci=1000)
async def test_unknown_methods_are_guarded_like_orders(method: str, live: bool, state: str) -> None:
    """A broker method of unknown name reaches a live broker only with live trading on and the
    state active."""
    reset_state(forget_breakers=True)

    async def call(self: Any, *args: Any, **kwargs: Any) -> str:
        self.calls.append(method)
        return "sent"

    broker = type("Sdk", (ClosedBroker,), {method: call})()
    proxy = _factory(_config(live=live, paper=not live, state=state)).create_resilient_broker(
        broker, f"prop_{next(_names)}"
    )
    allowed = live and state == "active"
    try:
        assert await getattr(proxy, method)("AAPL", 1) == "sent"
    except RiskLimitError:
        assert not allowed
    assert (broker.calls == [method]) == allowed


@given(
    errors=st.lists(BUSINESS, min_size=1, max_size=8),
    blank=st.sampled_from(["", " ", "\t", None]),
    threshold=st.integers(1, 3),
    live=st.booleans(),
    state=st.sampled_from(["active", "reducing", "halted"]),
    open_circuit=st.booleans(),
)
@examples(ci=1000)
async def test_business_errors_blank_ids_and_cancels(
    errors: list[tuple[int, str]],
    blank: str | None,
    threshold: int,
    live: bool,
    state: str,
    open_circuit: bool,
) -> None:
    """Business errors never open the breaker (each order reaches the broker once, blank ids
    replaced by real ones), and a cancel is never refused by a switch, a state or an open
    circuit."""
    import resilient

    reset_state(forget_breakers=True)
    name = f"prop_{next(_names)}"
    broker = ClosedBroker(errors)
    config = _config(live=True, paper=False, state="active", threshold=threshold)
    factory = _factory(config)
    proxy = factory.create_resilient_broker(broker, name)
    for _ in errors:
        with contextlib.suppress(Exception):
            await proxy.place_order("AAPL", "buy", limit_price=10.0, qty=1, client_order_id=blank)
    assert broker.calls == ["place_order"] * len(errors)
    assert resilient.breakers.get(name).state == "closed"
    factory._on_reload(_config(live=live, paper=not live, state=state, threshold=threshold))
    if open_circuit:
        resilient.breakers.get(name).force_open()
    assert await proxy.cancel_order("o-1") is True
    assert broker.calls[-1] == "cancel_order"
