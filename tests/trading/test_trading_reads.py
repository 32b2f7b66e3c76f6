"""A proxy's reads are fallback(cache) around retry(breaker(timeout)): one cache entry per
method and arguments, one degraded episode per service, the caller's wait reported."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

import resilient
from resilient import EventKind, PolicyEvent, add_hook
from resilient.config import Config, current_config
from resilient.integration import ResilienceFactory
from resilient.testing import zero_wait_retries
from resilient.trading import StalePrice


@pytest.fixture(autouse=True)
def _zero_wait() -> Iterator[None]:
    with zero_wait_retries():  # the conftest isolates the rest of the state
        yield


def make_config() -> Config:
    base = current_config()
    defaults = {"rate_limit": "", "timeout": 1.0, "max_attempts": 2}
    return replace(
        base,
        resilience=replace(base.resilience, health_check_enabled=False),
        extra={**base.extra, "services": {"defaults": defaults}},
    )


class Feed:
    """Two reads that answer differently for the same arguments; ``down`` fails both."""

    def __init__(self) -> None:
        self.down = False

    def _answer(self, value: float) -> float:
        if self.down:
            resilient.get_clock().sleep(0.02)  # the caller waits this long per attempt
            raise ConnectionResetError("feed reset")
        return value

    def get_last_price(self, symbol: str) -> float:
        return self._answer(101.5)

    def get_close_price(self, symbol: str) -> float:
        return self._answer(99.0)


def test_methods_keep_their_own_answers_and_share_one_episode() -> None:
    """Two methods called with the same arguments each get their own cached answer back,
    marked stale; both count in the service's one fallback episode, which a live answer
    ends."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    feed, svc = Feed(), f"svc_{uuid.uuid4().hex[:8]}"
    data: Any = factory.create_resilient_market_data(feed, svc)
    assert (data.get_last_price("AAPL"), data.get_close_price("AAPL")) == (101.5, 99.0)
    feed.down = True
    last, close = data.get_last_price("AAPL"), data.get_close_price("AAPL")
    assert isinstance(last, StalePrice) and isinstance(close, StalePrice)
    assert (float(last), float(close)) == (101.5, 99.0)
    status = resilient.fallback_status()[svc]
    assert status.degraded and status.served == 2 and status.episodes == 1
    assert asyncio.run(data._health())["status"] == "degraded"
    feed.down = False
    assert type(data.get_close_price("AAPL")) is float
    assert not resilient.fallback_status()[svc].degraded
    assert asyncio.run(data._health())["status"] == "healthy"
    asyncio.run(factory.shutdown())


def test_a_cached_answer_reports_how_long_the_caller_waited() -> None:
    """The fallback event of a cached answer names the service and carries the time the
    caller waited (every failed attempt included)."""
    factory = ResilienceFactory(make_config(), database=False, logging=False)
    feed, svc = Feed(), f"svc_{uuid.uuid4().hex[:8]}"
    data = factory.create_resilient_market_data(feed, svc)
    data.get_last_price("MSFT")
    events: list[PolicyEvent] = []

    def hook(event: PolicyEvent) -> None:
        events.append(event)

    remove = add_hook(hook, kinds=[EventKind.FALLBACK_SERVED])
    try:
        feed.down = True
        assert data.get_last_price("MSFT") == 101.5
    finally:
        remove()
    [event] = events
    assert event.name == svc and event.source == "cache" and event.first_in_episode
    assert event.elapsed >= 0.02 * 2  # both attempts
    asyncio.run(factory.shutdown())


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_fallback_serves_only_entries_younger_than_its_ttl(asynchronous: bool) -> None:
    """An entry stored under a longer TTL (another decoration sharing the cache key) is not
    served past this decoration's own ``cache_ttl``; ``cached_as`` shapes what is served."""
    prefix, fail = f"k_{uuid.uuid4().hex[:8]}", [False]

    def body(x: int) -> int:
        if fail[0]:
            raise ConnectionError("down")
        return x * 10

    async def abody(x: int) -> int:
        return body(x)

    fn: Any = abody if asynchronous else body

    def decorate(ttl: float, name: str) -> Any:
        return resilient.fallback(
            cache=True,
            cache_ttl=ttl,
            cache_key=prefix,
            name=name,
            cached_as=lambda value, age, exc: (value, type(exc).__name__),
        )(fn)

    async def call(f: Any, x: int) -> Any:
        return await f(x) if asynchronous else f(x)

    clock = resilient.FakeClock()
    with resilient.use_clock(clock):
        long_lived, short_lived = decorate(100.0, f"{prefix}-long"), decorate(1.0, f"{prefix}-s")
        assert await call(long_lived, 4) == 40
        fail[0] = True
        assert await call(short_lived, 4) == (40, "ConnectionError")
        clock.advance(5.0)
        assert await call(long_lived, 4) == (40, "ConnectionError")
        with pytest.raises(ConnectionError):
            await call(short_lived, 4)
