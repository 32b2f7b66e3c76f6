"""The decorators on a synchronous client and on an asynchronous one.

Run: python examples/decorators_sync_and_async.py
"""

from __future__ import annotations

import asyncio
import itertools

import resilient
from resilient import CircuitOpenError, breaker, fallback, retry, timeout


class FlakyQuotesClient:
    """A synchronous vendor SDK that drops every other connection."""

    def __init__(self) -> None:
        self.calls = itertools.count(1)

    def last_trade(self, symbol: str) -> float:
        if next(self.calls) % 2 == 1:
            raise ConnectionResetError("connection reset by peer")
        return 101.25


quotes = FlakyQuotesClient()


@retry(max_attempts=3, initial_delay=0.01)  # transient errors only; the original error if all fail
@breaker("quotes", failure_threshold=5)  # named: every function using "quotes" shares it
def last_trade(symbol: str) -> float:
    return quotes.last_trade(symbol)


class AsyncBarsClient:
    """An asyncio vendor SDK that is down for a while."""

    def __init__(self) -> None:
        self.down = False

    async def latest_close(self, symbol: str) -> float:
        if self.down:
            raise ConnectionRefusedError("vendor unreachable")
        await asyncio.sleep(0)
        return 188.0


bars = AsyncBarsClient()


@fallback(cache=True)  # when everything below fails: the last good answer for these arguments
@retry(max_attempts=2, initial_delay=0.01)
@breaker("bars", failure_threshold=2, reset_timeout=0.2)
@timeout(1.0)  # async: cancelled after 1 s, raises resilient.TimeoutError
async def latest_close(symbol: str) -> float:
    return await bars.latest_close(symbol)


# The one-shot composition: fallback(retry(breaker(timeout(fn)))).
@resilient.resilient("bars-composed", timeout=1.0, cache=True, max_attempts=2, initial_delay=0.01)
async def latest_close_composed(symbol: str) -> float:
    return await bars.latest_close(symbol)


async def run_async() -> None:
    fresh = await latest_close("AAPL")
    print(f"async: live close {fresh}")
    bars.down = True
    cached = await latest_close("AAPL")  # retried, then served from the cache
    print(f"async: vendor down, cached close {cached}")
    print(f"async: breaker 'bars' is {resilient.breakers.get('bars').snapshot().state}")
    try:
        await latest_close("MSFT")  # nothing cached for MSFT: the error comes through
    except CircuitOpenError as exc:
        print(f"async: MSFT not cached -> CircuitOpenError (retry in {exc.retry_after:.2f}s)")
    bars.down = False
    await asyncio.sleep(0.25)  # past reset_timeout: the next call is the half-open trial
    assert await latest_close("AAPL") == 188.0
    print(f"async: recovered, breaker 'bars' is {resilient.breakers.get('bars').snapshot().state}")
    assert await latest_close_composed("SPY") == 188.0


def main() -> None:
    price = last_trade("AAPL")  # the first attempt fails, the retry succeeds
    print(f"sync: last trade {price} after one retry")
    assert price == 101.25
    snapshot = resilient.breakers.get("quotes").snapshot()
    print(f"sync: breaker 'quotes' {snapshot.state}, {snapshot.failure_count} failure counted")
    asyncio.run(run_async())


if __name__ == "__main__":
    main()
