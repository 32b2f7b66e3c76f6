"""A trading team's tests for its own broker wrapper, written with ``resilient.testing``.

``BrokerGateway`` below stands for the team's code: a thin wrapper over the broker's REST client,
made resilient with ``@resilient``. ``BrokerAPI`` stands for the vendor SDK, faked. The tests use

* ``fault_schedules()`` — hypothesis draws whole outage stories (refused connections, read
  timeouts, 503s, 429s with Retry-After, hangs, slow answers, auth and validation errors) and
  shrinks a failure to the smallest story that still breaks the wrapper;
* ``FlakyService`` — plays a story against the fake SDK and records every call;
* the invariant checks — no call through an open circuit, retries within the policy, a fallback
  served exactly when the call failed, no order executed twice;
* the pytest plugin's fixtures — ``fake_clock`` (minutes of outage in microseconds),
  ``isolated_registry`` (no breaker or health state leaks between tests), ``zero_wait``.

Run it with ``pytest examples/test_my_broker.py``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings

import resilient
from resilient import CircuitOpenError, FakeClock
from resilient.health import registry as health
from resilient.testing import (
    Fault,
    FaultSchedule,
    FlakyService,
    RateLimited,
    Success,
    assert_fallback_iff_failed,
    assert_no_call_while_open,
    assert_no_duplicate_orders,
    assert_within_policy,
    reset_state,
    use_fake_clock,
)
from resilient.testing.strategies import fault_schedules

# --- the code under test -----------------------------------------------------------------------


class BrokerAPI:
    """The vendor SDK (faked): it executes orders and, like real brokers, de-duplicates them by
    ``client_order_id``."""

    def __init__(self) -> None:
        self.executed: list[dict[str, Any]] = []
        self._buying_power = 50_000.0

    async def get_account(self) -> dict[str, float]:
        self._buying_power += 1.0  # every answer differs, so a cached one is recognisable
        return {"cash": 25_000.0, "buying_power": self._buying_power}

    async def submit_order(
        self, symbol: str, qty: int, side: str, client_order_id: str | None = None
    ) -> dict[str, Any]:
        for order in self.executed:
            if client_order_id is not None and order["client_order_id"] == client_order_id:
                return order
        order = {"symbol": symbol, "qty": qty, "side": side, "client_order_id": client_order_id}
        self.executed.append(order)
        return order


BROKER = {"failure_threshold": 5, "reset_timeout": 30.0}  # one breaker for the whole broker


class BrokerGateway:
    """Our wrapper: what the strategy code calls."""

    def __init__(self, api: BrokerAPI) -> None:
        self.api = api

    @resilient.resilient(
        "broker", cache=True, max_attempts=3, initial_delay=0.5, max_delay=4.0, **BROKER
    )
    async def buying_power(self) -> float:
        """Reads are retried and fall back to the last good answer."""
        account = await self.api.get_account()
        return account["buying_power"]

    @resilient.resilient("broker", max_attempts=4, initial_delay=0.5, max_delay=4.0, **BROKER)
    async def buy(self, symbol: str, qty: int, *, intent_id: str) -> dict[str, Any]:
        """Orders carry the intent as client order id, so a retry after a lost answer cannot
        execute the order twice: the broker returns the first one."""
        return await self.api.submit_order(symbol, qty, "buy", client_order_id=intent_id)


def flaky_gateway(schedule: FaultSchedule) -> tuple[BrokerGateway, BrokerAPI, FlakyService]:
    """A gateway whose SDK plays ``schedule``, recording the breaker state at every call."""
    api = BrokerAPI()
    service = FlakyService(schedule, observe=lambda: resilient.breakers.get("broker").state)
    return BrokerGateway(service.wrap_object(api)), api, service


# --- property tests: hypothesis draws the outages ----------------------------------------------

# Hypothesis runs many examples in one test, so function-scoped fixtures would be shared by all
# of them: these tests install the fake clock and reset resilient's registries per example.
outages = fault_schedules(max_size=12, max_latency=3.0, hang_seconds=10.0, max_retry_after=10.0)


@pytest.mark.asyncio
@settings(max_examples=60, deadline=None)
@given(schedule=outages)
async def test_buying_power_survives_any_outage(schedule: FaultSchedule) -> None:
    """Whatever the outage, each read returns the fresh value or, exactly when it failed, the
    last good one; retries stay within the policy and nothing passes an open circuit."""
    reset_state()
    with use_fake_clock() as clock:
        gateway, _, service = flaky_gateway([Success(), *schedule])
        last_good = await gateway.buying_power()  # prime the cache with one good answer
        while len(service.calls) <= len(schedule):
            clock.advance(10.0)
            before = len(service.calls)
            result = await gateway.buying_power()
            calls = service.calls[before:]
            assert_fallback_iff_failed(
                result, calls, fallback=last_good, transform=lambda account: account["buying_power"]
            )
            assert_within_policy(calls, max_attempts=3, max_delay=4.0)
            if calls and not calls[-1].failed:
                last_good = result
        assert_no_call_while_open(service.calls)


@pytest.mark.asyncio
@settings(max_examples=60, deadline=None)
@given(schedule=outages)
async def test_orders_are_never_executed_twice(schedule: FaultSchedule) -> None:
    """Read timeouts, resets and hangs lose the broker's answer after it executed the order;
    however often that happens, every intent is executed at most once."""
    reset_state()
    with use_fake_clock() as clock:
        gateway, api, service = flaky_gateway(schedule)
        for intent in range(4):
            clock.advance(31.0)  # past the reset timeout: an open circuit lets a trial through
            with contextlib.suppress(Exception):
                await gateway.buy("AAPL", 10, intent_id=f"intent-{intent}")
        assert_no_duplicate_orders(api.executed, intent=lambda order: order["client_order_id"])
        assert_no_call_while_open(service.calls)


# --- example tests: the plugin's fixtures ------------------------------------------------------


async def test_a_naive_order_retry_would_duplicate(fake_clock: FakeClock) -> None:
    """The invariant catches the classic bug: retrying an order without an idempotency key."""
    api = BrokerAPI()
    service = FlakyService([Fault("timeout")])  # the order executes, the answer is lost
    submit = resilient.retry(max_attempts=2, initial_delay=0.5)(service.wrap(api.submit_order))
    await submit("AAPL", 10, "buy")
    with pytest.raises(AssertionError, match="executed 2 times"):
        assert_no_duplicate_orders(api.executed, intent=lambda order: order["symbol"])


async def test_circuit_opens_then_recovers(fake_clock: FakeClock, isolated_registry: None) -> None:
    """Five refused connections open the circuit; calls are then refused without touching the
    broker, health shows it, and after the reset timeout one good trial closes it again."""
    gateway, api, service = flaky_gateway([Fault("connection_refused")] * 5)
    # 4 attempts (a refused connection proves the order never left, so it is retried) ...
    with pytest.raises(ConnectionRefusedError):
        await gateway.buy("AAPL", 1, intent_id="i-1")
    # ... and the 5th failure opens the circuit: the retry stops at it
    with pytest.raises(CircuitOpenError):
        await gateway.buy("AAPL", 1, intent_id="i-1")
    assert len(service.calls) == 5
    assert resilient.breakers.get("broker").state == "open"
    with pytest.raises(CircuitOpenError):
        await gateway.buy("AAPL", 1, intent_id="i-1")
    assert len(service.calls) == 5  # rejected without reaching the broker
    report = await health.check_all()
    assert report.components["broker"].status == "unhealthy"

    fake_clock.advance(30.0)  # the broker is back (the schedule ran out) and the timeout passed
    assert (await gateway.buy("AAPL", 1, intent_id="i-1"))["client_order_id"] == "i-1"
    assert resilient.breakers.get("broker").state == "closed"
    assert_no_call_while_open(service.calls)
    assert len(api.executed) == 1


async def test_rate_limit_is_waited_out(fake_clock: FakeClock, isolated_registry: None) -> None:
    """A 429 with Retry-After: 7 is waited out on the (fake) clock before the retry."""
    gateway, _, service = flaky_gateway([RateLimited(7.0), Success()])
    await gateway.buying_power()
    assert fake_clock.sleeps and fake_clock.sleeps[0] >= 7.0
    assert service.calls[1].started - service.calls[0].ended >= 7.0


async def test_zero_wait_keeps_attempts(zero_wait: None, isolated_registry: None) -> None:
    """With zero-wait retries a test checks the attempts without any waiting at all."""
    gateway, _, service = flaky_gateway([Fault("http_503"), Fault("timeout")])
    assert await gateway.buying_power() > 50_000.0
    assert len(service.calls) == 3
