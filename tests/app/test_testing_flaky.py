"""The flaky service: plays a schedule against sync and async functions, on the current clock."""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import pytest

from resilient import FakeClock, classify
from resilient.errors import proves_not_sent, retry_after
from resilient.testing import (
    FAULT_KINDS,
    Fault,
    FaultSchedule,
    FlakyService,
    Hang,
    HTTPStatusError,
    Latency,
    OrderRejectedError,
    RateLimited,
    Success,
    use_fake_clock,
)

EXPECTED_CATEGORY = {
    "connection_refused": "network",
    "connection_reset": "network",
    "timeout": "timeout",
    "http_503": "network",
    "http_429": "rate_limit",
    "http_401": "authentication",
    "http_403": "authentication",
    "http_400": "validation",
    "http_422": "validation",
    "http_500": "network",
    "http_404": "data_unavailable",
    "broker_rejection": "broker_rejection",
    "value_error": "validation",
    "database": "database",
    "internal": "internal",
}


def test_every_fault_kind_has_its_category() -> None:
    """Each fault kind raises an exception the package classifies into the intended category."""
    assert set(EXPECTED_CATEGORY) == set(FAULT_KINDS)
    for kind, category in EXPECTED_CATEGORY.items():
        assert Fault(kind).category == category, kind
        assert classify(Fault(kind).make_exception()).value == category


def test_faults_that_never_reached_the_service_prove_it() -> None:
    """A refused connection and a 429 prove the request was not sent; a read timeout does not."""
    assert not Fault("connection_refused").reached
    assert proves_not_sent(Fault("connection_refused").make_exception())
    assert proves_not_sent(RateLimited(1.0).make_exception())
    assert Fault("timeout").reached
    assert not proves_not_sent(Fault("timeout").make_exception())
    assert Hang().reached
    assert not proves_not_sent(Hang().make_exception())


@pytest.mark.parametrize("header", [True, False])
def test_rate_limited_carries_retry_after(header: bool) -> None:
    """The Retry-After is readable from the header or from the attribute."""
    exc = RateLimited(2.5, header=header).make_exception()
    assert isinstance(exc, HTTPStatusError)
    assert exc.status_code == 429 and exc.response.status_code == 429
    assert retry_after(exc) == 2.5
    assert ("Retry-After" in exc.headers) is header
    assert RateLimited(2.5, header=header).category == "rate_limit"


def test_unknown_fault_kind_names_the_valid_ones() -> None:
    """A typo in a fault kind is an error listing every valid kind."""
    with pytest.raises(ValueError, match="connection_refused"):
        Fault("conection_refused")


def test_negative_durations_are_rejected() -> None:
    """Latency and hangs cannot be negative."""
    with pytest.raises(ValueError, match="latency"):
        Latency(-1)
    with pytest.raises(ValueError, match="hang"):
        Hang(-1)


def test_each_play_raises_a_fresh_exception() -> None:
    """Two plays of the same fault raise two distinct exception objects (no shared traceback)."""
    service = FlakyService([Fault("timeout"), Fault("timeout")])
    raised = []
    for _ in range(2):
        with pytest.raises(TimeoutError) as info:
            service.call()
        raised.append(info.value)
    assert raised[0] is not raised[1]


def test_sync_wrap_plays_schedule_then_default(fake_clock: FakeClock) -> None:
    """Outcomes are played in order, one per call, then ``then`` for ever."""
    seen: list[tuple[Any, ...]] = []

    def get_price(symbol: str, *, venue: str = "X") -> float:
        seen.append((symbol, venue))
        return 101.5

    service = FlakyService([Fault("connection_refused"), Success()], then=Fault("http_503"))
    flaky = service.wrap(get_price)
    assert flaky.__name__ == "get_price"
    with pytest.raises(ConnectionRefusedError):
        flaky("AAPL")
    assert flaky("AAPL", venue="Y") == 101.5
    with pytest.raises(HTTPStatusError) as info:
        flaky("MSFT")
    assert info.value.status_code == 503
    # the refused call and the 503 never reached the function
    assert seen == [("AAPL", "Y")]
    assert [c.args for c in service.calls] == [("AAPL",), ("AAPL",), ("MSFT",)]
    assert service.calls[1].kwargs == {"venue": "Y"}
    assert [c.failed for c in service.calls] == [True, False, True]
    assert service.calls[1].result == 101.5
    assert service.remaining == FaultSchedule([])


async def test_async_wrap_plays_schedule(fake_clock: FakeClock) -> None:
    """An async function stays a coroutine function and plays the same way."""

    async def get_price(symbol: str) -> float:
        return 99.0

    service = FlakyService([Fault("timeout"), Success()])
    flaky = service.wrap(get_price)
    assert asyncio.iscoroutinefunction(flaky)
    with pytest.raises(TimeoutError):
        await flaky("AAPL")
    assert await flaky("AAPL") == 99.0
    assert [c.index for c in service.calls] == [0, 1]
    # a read timeout reached the service: the function ran, the answer was lost
    assert service.calls[0].reached and service.calls[0].result is None


async def test_async_callable_object_and_partial_are_detected() -> None:
    """Objects with an async ``__call__`` and partials of coroutine functions are wrapped async."""

    class Client:
        async def __call__(self, x: int) -> int:
            return x * 2

    async def add(a: int, b: int) -> int:
        return a + b

    service = FlakyService()
    assert await service.wrap(Client())(4) == 8
    assert await service.wrap(functools.partial(add, 1))(2) == 3


def test_latency_and_hang_advance_the_fake_clock_without_sleeping(fake_clock: FakeClock) -> None:
    """Simulated time passes on the fake clock; the wall clock barely moves."""
    service = FlakyService([Latency(2.5), Hang(600.0), Latency(1.0, then=Fault("http_401"))])
    t0 = time.monotonic()
    start = fake_clock.monotonic()
    assert service.call() is None
    with pytest.raises(TimeoutError):
        service.call()
    with pytest.raises(HTTPStatusError):
        service.call()
    assert fake_clock.monotonic() - start == pytest.approx(603.5)
    assert time.monotonic() - t0 < 0.5
    assert [c.duration for c in service.calls] == [2.5, 600.0, 1.0]
    assert [c.started for c in service.calls] == [start, start + 2.5, start + 602.5]


async def test_async_hang_sleeps_on_the_clock(fake_clock: FakeClock) -> None:
    """An async hang waits on the current clock, then raises a read timeout."""
    service = FlakyService([Hang(30.0)])
    with pytest.raises(TimeoutError, match="30 s"):
        await service.acall()
    assert fake_clock.sleeps == [30.0]


def test_service_follows_the_clock_in_force() -> None:
    """The clock is read at call time, so a clock installed after wrapping is honoured."""
    service = FlakyService([Latency(5.0)])
    fn = service.wrap(lambda: "ok")
    with use_fake_clock(start=50.0) as clock:
        assert fn() == "ok"
        assert clock.monotonic() == 55.0
    assert service.calls[0].started == 50.0


def test_exception_of_the_function_itself_is_recorded(fake_clock: FakeClock) -> None:
    """When the wrapped function raises on a success outcome, that error is recorded and raised."""

    def broken() -> None:
        raise KeyError("no quote")

    service = FlakyService()
    with pytest.raises(KeyError):
        service.wrap(broken)()
    assert isinstance(service.calls[0].exception, KeyError)
    assert service.calls[0].ended is not None


def test_observe_records_state_at_each_call() -> None:
    """``observe`` is called at the start of every call and stored with it."""
    states = iter(["closed", "half-open"])
    service = FlakyService(observe=lambda: next(states))
    service.call()
    service.call()
    assert [c.observed for c in service.calls] == ["closed", "half-open"]


class _Broker:
    currency = "USD"

    def __init__(self) -> None:
        self.orders: list[str] = []

    def place_order(self, client_order_id: str) -> str:
        self.orders.append(client_order_id)
        return client_order_id

    async def get_account(self) -> dict[str, float]:
        return {"cash": 1000.0}

    def _private(self) -> str:
        return "untouched"


async def test_wrap_object_shares_one_schedule() -> None:
    """Every public method plays the one schedule; attributes and private methods pass through."""
    broker = _Broker()
    service = FlakyService([Fault("connection_refused"), Fault("timeout")])
    flaky = service.wrap_object(broker)
    assert flaky.currency == "USD"
    assert flaky._private() == "untouched"
    with pytest.raises(ConnectionRefusedError):
        await flaky.get_account()
    with pytest.raises(TimeoutError):
        flaky.place_order("o-1")
    # the timeout came after the order reached the broker
    assert broker.orders == ["o-1"]
    assert await flaky.get_account() == {"cash": 1000.0}
    assert len(service.calls) == 3


def test_wrap_object_limited_to_some_methods() -> None:
    """With ``methods=``, only those methods are flaky."""
    broker = _Broker()
    flaky = FlakyService([Fault("http_503")]).wrap_object(broker, methods=["get_account"])
    assert flaky.place_order("o-1") == "o-1"


def test_order_rejection_is_a_rejection() -> None:
    """The broker rejection carries its reason and is classified as a broker rejection."""
    exc = OrderRejectedError("market closed")
    assert exc.reason == "market closed" and "market closed" in str(exc)
    assert classify(exc).value == "broker_rejection"


def test_reprs_are_compact() -> None:
    """Schedules and calls print in a form that reads well in a failing example."""
    schedule = FaultSchedule(
        [Success(), Fault("http_429"), RateLimited(2.0), Latency(0.5, then=Fault("timeout"))]
    )
    assert repr(schedule) == (
        "FaultSchedule([ok, http_429, rate_limited(2s), latency(0.5s then timeout)])"
    )
    assert schedule.faults == 3
    service = FlakyService([Hang(5)])
    with use_fake_clock(), pytest.raises(TimeoutError):
        service.call()
    assert repr(service.calls[0]) == "<call #0 at t=1000 (5s) hang(5s): raised TimeoutError>"


def test_wrap_object_is_introspectable_like_the_client() -> None:
    """Wrapped methods are real attributes (``dir``, ``getattr_static``, signatures), so a
    resilience proxy that inspects its client sees the client's methods."""
    import inspect

    flaky = FlakyService().wrap_object(_Broker())
    assert "place_order" in dir(flaky) and "currency" in dir(flaky)
    assert callable(inspect.getattr_static(flaky, "place_order"))
    assert list(inspect.signature(flaky.place_order).parameters) == ["client_order_id"]
    with pytest.raises(AttributeError, match="no method"):
        FlakyService().wrap_object(_Broker(), methods=["cancel_everything"])
