"""@resilient(name, ...): the composed stack, callables of every shape, signatures kept."""

from __future__ import annotations

import asyncio
import functools
import inspect
import uuid
from typing import Any

import pytest

import resilient
from resilient import (
    CircuitOpenError,
    EventKind,
    FakeClock,
    breaker,
    breakers,
    fallback,
    fallback_status,
    get_breaker,
    retry,
    timeout,
    use_clock,
)
from resilient._core.clock import SystemClock
from resilient.testing import capture_events, zero_wait_retries


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"st-{uuid.uuid4().hex[:10]}"


async def test_stack_retries_then_opens_then_falls_back(name: str) -> None:
    """Retries count toward the breaker; once open, calls are served by the fallback
    without reaching the function."""
    calls = 0

    @resilient.resilient(name, failure_threshold=3, max_attempts=3, value=-1.0)
    async def price(symbol: str) -> float:
        nonlocal calls
        calls += 1
        raise ConnectionError("feed down")

    with zero_wait_retries(), capture_events() as events:
        assert await price("AAPL") == -1.0
        assert get_breaker(name).state == "open"
        assert await price("AAPL") == -1.0
    assert calls == 3
    served = [e for e in events if e.kind is EventKind.FALLBACK_SERVED]
    assert isinstance(served[0].exception, ConnectionError)
    assert isinstance(served[1].exception, CircuitOpenError)
    assert len(served) == 2
    assert [e.first_in_episode for e in served] == [True, False]
    assert not [e for e in events if e.kind is EventKind.CALL_FAILED]
    assert fallback_status()[name].degraded


async def test_stack_cache_serves_the_last_good_price(name: str, clock: FakeClock) -> None:
    """resilient(name, cache=True): the last good result when the service fails."""
    down = False

    @resilient.resilient(name, cache=True, max_attempts=2)
    async def price(symbol: str) -> float:
        if down:
            raise ConnectionError("down")
        return 101.5

    assert await price("AAPL") == 101.5
    down = True
    with zero_wait_retries():
        assert await price("AAPL") == 101.5


def test_stack_sync_with_timeout(name: str) -> None:
    """The sync stack with a timeout layer: a hanging call times out and is retried."""
    import threading

    release = threading.Event()
    calls = 0

    @resilient.resilient(name, timeout=0.02, max_attempts=2, value="fb")
    def slow() -> str:
        nonlocal calls
        calls += 1
        release.wait(2)
        return "late"

    with use_clock(SystemClock()), zero_wait_retries():  # real time: the worker really blocks
        assert slow() == "fb"
    release.set()
    assert calls == 2
    assert get_breaker(name).snapshot().last_failure_category == "timeout"


async def test_call_failed_reported_once_by_the_outermost_layer(name: str) -> None:
    """Without a fallback the final error is reported once per call, after the retries."""

    @resilient.resilient(name, max_attempts=3, failure_threshold=10)
    async def service() -> None:
        raise ConnectionError("x")

    with zero_wait_retries(), capture_events() as events, pytest.raises(ConnectionError):
        await service()
    failed = [e for e in events if e.kind is EventKind.CALL_FAILED]
    assert len(failed) == 1 and failed[0].attempt == 3


class AsyncCallable:
    async def __call__(self, x: int) -> int:
        await asyncio.sleep(0)
        return x * 3


async def test_methods_partials_and_callable_objects(name: str) -> None:
    """Works on methods, partials of async functions and objects with async __call__."""

    # defined here, so that its breaker belongs to this test (forgotten afterwards)
    class Broker:
        def __init__(self) -> None:
            self.calls = 0

        @breaker("compose-methods")
        @retry(max_attempts=2)
        async def account(self, currency: str = "USD") -> dict[str, Any]:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("x")
            return {"currency": currency, "calls": self.calls}

        @fallback(value=0)
        def sync_method(self, x: int) -> int:
            return 10 // x

    broker = Broker()
    with zero_wait_retries():
        assert await broker.account("EUR") == {"currency": "EUR", "calls": 2}
    assert broker.sync_method(0) == 0 and broker.sync_method(5) == 2

    async def add(a: int, b: int) -> int:
        return a + b

    part = breaker(name)(functools.partial(add, 1))
    assert inspect.iscoroutinefunction(part)
    assert await part(2) == 3
    obj = retry(max_attempts=2)(AsyncCallable())
    assert inspect.iscoroutinefunction(obj)
    assert await obj(2) == 6
    timed = timeout(1)(AsyncCallable())
    assert await timed(3) == 9


def test_signature_and_metadata_are_kept(name: str) -> None:
    """Decorated functions keep their name, docstring and signature."""

    @resilient.resilient(name, value=None)
    async def get_price(symbol: str, *, venue: str = "XNAS") -> float:
        """The last trade price."""
        return 1.0

    assert get_price.__name__ == "get_price"
    assert get_price.__doc__ == "The last trade price."
    assert (
        str(inspect.signature(get_price)) == "(symbol: 'str', *, venue: 'str' = 'XNAS') -> 'float'"
    )
    assert inspect.iscoroutinefunction(get_price)
    assert get_price.breaker is get_breaker(name)  # type: ignore[attr-defined]
    assert get_price.policy_name == name  # type: ignore[attr-defined]


def test_layers_can_be_left_out(name: str) -> None:
    """use_breaker=False and use_retry=False leave those layers out."""
    calls = 0

    @resilient.resilient(name, use_breaker=False, use_retry=False)
    def once() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("x")

    with pytest.raises(ConnectionError):
        once()
    assert calls == 1
    assert name not in breakers
