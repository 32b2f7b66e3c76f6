"""Client-side rate limits per service (limits library, memory or Redis)."""

from __future__ import annotations

import time
import uuid

import pytest

from resilient.errors import classify, proves_not_sent
from resilient.trading import RateLimitExceeded, ServiceRateLimiter


async def test_calls_within_the_limit_do_not_wait() -> None:
    """Calls under the limit pass at once and are counted as usage."""
    limiter = ServiceRateLimiter("svc", "5/second", max_wait=0.0)
    for _ in range(5):
        await limiter.acquire()
    usage = await limiter.usage()
    assert usage["window_used"] == 5
    assert usage["requests"] == 5
    assert usage["throttled"] == 0
    assert usage["backend"] == "memory"


async def test_over_the_limit_is_refused_without_waiting_beyond_max_wait() -> None:
    """A call over the limit is refused with retry_after when the wait exceeds max_wait."""
    limiter = ServiceRateLimiter("svc", "2/minute", max_wait=0.05)
    await limiter.acquire()
    await limiter.acquire()
    started = time.monotonic()
    with pytest.raises(RateLimitExceeded) as info:
        await limiter.acquire()
    assert time.monotonic() - started < 0.5
    assert 0 < info.value.retry_after <= 61
    assert info.value.name == "svc"
    assert "services.svc.rate_limit" in str(info.value)
    assert classify(info.value).value == "rate_limit"
    assert proves_not_sent(info.value)
    usage = await limiter.usage()
    assert usage["refused"] == 1 and usage["throttled"] == 1


async def test_over_the_limit_waits_for_a_slot() -> None:
    """With room in max_wait, a call waits for the window to free a slot."""
    limiter = ServiceRateLimiter("svc", "2/second", max_wait=2.0)
    started = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.5
    assert limiter.throttled == 1


def test_sync_acquire() -> None:
    """Synchronous clients share the same limit."""
    limiter = ServiceRateLimiter("svc", "1/minute", max_wait=0.0)
    limiter.acquire_sync()
    with pytest.raises(RateLimitExceeded):
        limiter.acquire_sync()


@pytest.mark.redis
async def test_redis_limit_is_shared_between_limiters(redis_url: str) -> None:
    """Two limiters on one Redis (two processes) share one budget."""
    prefix = f"test-{uuid.uuid4().hex}"
    a = ServiceRateLimiter(
        "shared", "3/minute", max_wait=0.0, redis_url=redis_url, key_prefix=prefix, timeout=1.0
    )
    b = ServiceRateLimiter(
        "shared", "3/minute", max_wait=0.0, redis_url=redis_url, key_prefix=prefix, timeout=1.0
    )
    try:
        await a.acquire()
        await b.acquire()
        b.acquire_sync()
        with pytest.raises(RateLimitExceeded):
            await a.acquire()
        usage = await a.usage()
        assert usage["backend"] == "redis"
        assert usage["window_used"] == 3
        assert not a.degraded
    finally:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await a.aclose()
        await b.aclose()


async def test_unreachable_redis_degrades_to_memory() -> None:
    """With Redis down the limiter still limits (in memory) and reports itself degraded."""
    limiter = ServiceRateLimiter(
        "svc", "2/minute", max_wait=0.0, redis_url="redis://127.0.0.1:1/0", timeout=0.05
    )
    try:
        await limiter.acquire()
        await limiter.acquire()
        with pytest.raises(RateLimitExceeded):
            await limiter.acquire()
        assert limiter.degraded
        usage = await limiter.usage()
        assert "backend_error" in usage
    finally:
        await limiter.aclose()
