"""ServiceRateLimiter learning from the venue's answers: usage headers re-sync the window,
429s block (Retry-After in seconds, epoch or HTTP date), ``watch`` feeds it from answers and
errors; shared through the real Redis, and in memory while Redis is unreachable."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import pytest
import redis

from resilient.testing.servers import free_port
from resilient.trading import RateLimitExceeded, ServiceRateLimiter


class _Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class _HTTPError(Exception):
    def __init__(self, status: int, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.response = _Response(status, headers)


def test_used_header_resyncs_the_window_in_memory() -> None:
    limiter = ServiceRateLimiter("fb-used", "200/minute")
    limiter.feedback({"X-MBX-USED-WEIGHT-1M": "150"})
    assert limiter.resyncs == 1
    limiter.feedback({"X-MBX-USED-WEIGHT-1M": "100"})  # below what is counted: nothing to add
    assert limiter.resyncs == 1
    limiter.feedback({"Unrelated": "1"})
    assert limiter.blocks == 0


async def test_remaining_header_and_usage_report() -> None:
    limiter = ServiceRateLimiter("fb-remaining", "100/minute", used_header="")
    await limiter.afeedback({"X-RateLimit-Remaining": "40"})
    usage = await limiter.usage()
    assert usage["window_used"] == 60.0 and usage["window_limit"] == 100
    assert usage["usage_ratio"] == 0.6
    assert usage["backend"] == "memory" and usage["resyncs"] == 1


@pytest.mark.parametrize(
    "form", ["seconds", "epoch seconds", "epoch milliseconds", "HTTP date", "reset header"]
)
def test_a_429_blocks_for_the_time_the_venue_asks(form: str) -> None:
    at = time.time() + 30
    headers = {
        "seconds": {"Retry-After": "30"},
        "epoch seconds": {"Retry-After": str(at)},
        "epoch milliseconds": {"Retry-After": str(at * 1000)},
        "HTTP date": {"Retry-After": formatdate(at, usegmt=True)},
        "reset header": {"X-RateLimit-Reset": "30"},
    }[form]
    limiter = ServiceRateLimiter("fb-block", "10/second", max_wait=0.05)
    limiter.feedback(headers, status=429)
    assert 25.0 < limiter.blocked_for <= 31.0
    assert limiter.blocks == 1
    with pytest.raises(RateLimitExceeded):
        limiter.acquire_sync()
    assert limiter.refused == 1


def test_a_429_without_any_hint_blocks_one_window() -> None:
    limiter = ServiceRateLimiter("fb-nohint", "10/second", used_header="", remaining_header="")
    limiter.feedback({"Retry-After": "soon"}, status=429)
    assert 0.0 < limiter.blocked_for <= 1.0


def test_exhausted_remaining_blocks_until_the_reset() -> None:
    limiter = ServiceRateLimiter("fb-exhausted", "100/minute", used_header="")
    limiter.feedback({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"})
    assert 15.0 < limiter.blocked_for <= 20.0


def test_watch_feeds_answers_and_errors_sync() -> None:
    limiter = ServiceRateLimiter("fb-watch", "100/minute")
    answers = iter(
        [
            _Response(200, {"X-MBX-USED-WEIGHT-1M": "70"}),
            _HTTPError(429, {"Retry-After": "12"}),
        ]
    )

    def call() -> Any:
        item = next(answers)
        if isinstance(item, Exception):
            raise item
        return item

    watched = limiter.watch(call, asynchronous=False)
    assert watched().status_code == 200
    assert limiter.resyncs == 1
    with pytest.raises(_HTTPError):
        watched()
    assert 10.0 < limiter.blocked_for <= 12.0


async def test_watch_feeds_answers_and_errors_async_from_the_client_headers() -> None:
    class Exchange:  # ccxt keeps the last answer's headers on the client
        def __init__(self) -> None:
            self.last_response_headers: dict[str, str] = {}

    exchange = Exchange()
    limiter = ServiceRateLimiter("fb-watch-async", "100/minute")

    async def fetch() -> dict[str, Any]:
        exchange.last_response_headers = {"X-MBX-USED-WEIGHT-1M": "90"}
        return {"price": 1.0}

    async def fail() -> None:
        raise _HTTPError(418, {"Retry-After": "5"})

    assert await limiter.watch(fetch, asynchronous=True, source=exchange)() == {"price": 1.0}
    assert limiter.resyncs == 1
    with pytest.raises(_HTTPError):
        await limiter.watch(fail, asynchronous=True)()
    assert 3.0 < limiter.blocked_for <= 5.0


@pytest.fixture
async def shared(redis_url: str) -> AsyncIterator[tuple[str, str]]:
    prefix = f"fb-{uuid.uuid4().hex[:8]}"
    yield redis_url, prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def test_a_block_is_shared_through_redis(shared: tuple[str, str]) -> None:
    url, prefix = shared
    one = ServiceRateLimiter("fb-shared", "100/minute", redis_url=url, key_prefix=prefix)
    two = ServiceRateLimiter("fb-shared", "100/minute", redis_url=url, key_prefix=prefix)
    try:
        await one.afeedback({"Retry-After": "20", "X-MBX-USED-WEIGHT-1M": "30"}, status=429)
        one.feedback({"X-MBX-USED-WEIGHT-1M": "50"})
        usage = await two.usage()
        assert usage["backend"] == "redis" and usage["window_used"] == 50.0
        assert not one.degraded
        with pytest.raises(RateLimitExceeded):
            await two.acquire()  # the block another process stored is honoured
    finally:
        await one.aclose()
        await two.aclose()


async def test_unreachable_redis_counts_in_memory() -> None:
    limiter = ServiceRateLimiter(
        "fb-down",
        "100/minute",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        timeout=0.05,
    )
    try:
        await limiter.afeedback({"X-MBX-USED-WEIGHT-1M": "25"})
        assert limiter.degraded
        limiter.feedback({"Retry-After": "3"}, status=429)
        assert 1.0 < limiter.blocked_for <= 3.0
        usage = await limiter.usage()
        assert usage["window_used"] == 25.0
        assert usage["backend_error"]
    finally:
        await limiter.aclose()


async def test_redis_counts_are_shared_and_exhaust_across_limiters(
    shared: tuple[str, str],
) -> None:
    url, prefix = shared
    one = ServiceRateLimiter("fb-count", "2/minute", redis_url=url, key_prefix=prefix, max_wait=0)
    two = ServiceRateLimiter("fb-count", "2/minute", redis_url=url, key_prefix=prefix, max_wait=0)
    try:
        await one.acquire()
        two.acquire_sync()
        with pytest.raises(RateLimitExceeded):
            await two.acquire()
        with pytest.raises(RateLimitExceeded):
            one.acquire_sync()
        assert (await one.usage())["window_used"] == 2.0
        assert not one.degraded and not two.degraded
    finally:
        await one.aclose()
        await two.aclose()


def test_a_sync_block_stored_in_redis_stops_other_limiters(shared: tuple[str, str]) -> None:
    url, prefix = shared
    one = ServiceRateLimiter("fb-sblock", "100/minute", redis_url=url, key_prefix=prefix)
    two = ServiceRateLimiter(
        "fb-sblock", "100/minute", redis_url=url, key_prefix=prefix, max_wait=0.01
    )
    one.feedback({"Retry-After": "15"}, status=429)
    with pytest.raises(RateLimitExceeded) as info:
        two.acquire_sync()
    assert "blocked by the venue" in str(info.value)


def test_a_weight_larger_than_the_limit_is_refused() -> None:
    limiter = ServiceRateLimiter("fb-weight", "5/second")
    with pytest.raises(ValueError, match="can never fit the rate limit"):
        limiter.acquire_sync(cost=6)


async def test_unreachable_redis_limits_in_memory_and_reports_it() -> None:
    limiter = ServiceRateLimiter(
        "fb-down-acq",
        "1/minute",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        timeout=0.05,
        max_wait=0,
    )
    try:
        await limiter.acquire()
        assert limiter.degraded
        with pytest.raises(RateLimitExceeded):
            limiter.acquire_sync()
    finally:
        await limiter.aclose()
