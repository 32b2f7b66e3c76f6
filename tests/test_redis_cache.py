"""The Redis fallback cache: shared values with TTL and age, in-process stand-in, bounded
latency on a dead or black-holed Redis, no redis exception ever reaching the caller."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from resilient import fallback
from resilient._cache import FallbackCache, get_fallback_cache, set_fallback_cache
from resilient._clock import FakeClock, use_clock
from resilient._redis import (
    RedisCache,
    close_workers,
    enable_redis_cache,
    make_redis_client,
    register_health_checks,
)
from resilient.health import HealthRegistry
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import free_port


@pytest.fixture(autouse=True)
def _workers() -> Iterator[None]:
    yield
    close_workers()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A unique key prefix in DB 15; its keys are deleted afterwards."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_client_has_short_timeouts_and_no_hidden_retries() -> None:
    client = make_redis_client("redis://127.0.0.1:1/0", timeout=0.05)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.05
    assert kwargs["socket_connect_timeout"] == 0.05
    assert kwargs["retry"].get_retries() == 0
    started = time.perf_counter()
    with pytest.raises(Exception) as info:
        await client.ping()
    assert time.perf_counter() - started < 0.5
    assert type(info.value).__module__.startswith("redis")
    await client.aclose()


async def test_values_are_shared_with_age_and_ttl(redis_url: str, prefix: str) -> None:
    writer = RedisCache(redis_url, prefix=prefix)
    reader = RedisCache(redis_url, prefix=prefix)  # another process's view: its own local layer
    assert isinstance(writer, FallbackCache)
    await writer.set("quote:AAPL", {"price": 187.5}, 30.0)
    assert writer.worker is not None
    await writer.worker.drain()
    entry = await reader.entry("quote:AAPL")
    assert entry is not None
    assert entry.source == "redis"
    assert entry.value == {"price": 187.5}
    assert entry.ttl == 30.0
    assert 0.0 <= entry.age < 5.0
    assert entry.stored_at <= time.time()
    cached = await reader.get("quote:AAPL")
    assert cached is not None and cached.value == {"price": 187.5}
    client = aioredis.Redis.from_url(redis_url)
    raw = await client.pttl(f"{prefix}:cache:quote:AAPL")
    await client.aclose()
    assert 0 < raw <= 30_000


async def test_expired_values_are_not_served(redis_url: str, prefix: str) -> None:
    with use_clock(FakeClock()) as clock:
        cache = RedisCache(redis_url, prefix=prefix)
        await cache.set("k", 1.5, 10.0)
        assert cache.worker is not None
        await cache.worker.drain()
        clock.advance(5.0)
        entry = await cache.entry("k")
        assert entry is not None and entry.age == pytest.approx(5.0, abs=0.5)
        clock.advance(6.0)
        assert await cache.get("k") is None


async def test_value_json_cannot_hold_stays_in_process(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    other = RedisCache(redis_url, prefix=prefix)
    await cache.set("obj", {1, 2}, 30.0)
    assert cache.worker is not None
    await cache.worker.drain()
    assert (await cache.get("obj")) is not None  # served from the in-process layer
    assert await other.get("obj") is None


async def test_pickle_serializer_is_opt_in(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix, serializer="pickle")
    other = RedisCache(redis_url, prefix=prefix, serializer="pickle")
    json_reader = RedisCache(redis_url, prefix=prefix)
    await cache.set("obj", {1, 2}, 30.0)
    assert cache.worker is not None
    await cache.worker.drain()
    got = await other.get("obj")
    assert got is not None and got.value == {1, 2}
    assert await json_reader.get("obj") is None  # never unpickled unless opted in
    with pytest.raises(ValueError, match="serializer"):
        RedisCache(redis_url, serializer="yaml")


async def test_sync_interface(redis_url: str, prefix: str) -> None:
    cache = RedisCache(redis_url, prefix=prefix)
    other = RedisCache(redis_url, prefix=prefix)
    cache.set_sync("s", [1, 2], 30.0)
    assert cache.worker is not None
    await cache.worker.drain()
    got = await asyncio.to_thread(other.get_sync, "s")
    assert got is not None and got.value == [1, 2]


async def test_dead_redis_falls_back_to_in_process_without_raising() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    await cache.set("k", "v", 30.0)
    for _ in range(5):
        started = time.perf_counter()
        got = await cache.get("k")
        assert time.perf_counter() - started < 0.15
        assert got is not None and got.value == "v"
    assert cache.worker is not None and cache.worker.guard.is_open
    health = await cache.health_check()
    assert health["status"] == "degraded"
    assert "in-process" in health["detail"]


async def test_blackholed_redis_costs_at_most_the_timeout(redis_url: str, prefix: str) -> None:
    """A silent Redis delays a read by ≤ redis.timeout, then is skipped entirely."""
    async with FaultProxy("127.0.0.1", 6379) as proxy:
        url = redis_url.replace(":6379/", f":{proxy.port}/")
        cache = RedisCache(url, prefix=prefix, timeout=0.1)
        await cache.set("k", 42, 30.0)
        assert cache.worker is not None
        await cache.worker.drain()
        cache.local.clear()
        assert (await cache.get("k")) is not None
        await cache.set("k", 42, 30.0)  # the in-process copy
        proxy.blackhole = True
        durations = []
        for _ in range(6):
            started = time.perf_counter()
            got = await cache.get("k")
            durations.append(time.perf_counter() - started)
            assert got is not None and got.value == 42
        assert max(durations) < 0.1 + 0.05
        assert sum(d > 0.05 for d in durations) <= 2  # then the guard skips Redis
        proxy.blackhole = False


async def test_password_never_in_repr_or_health() -> None:
    secret = "rds-secret-XYZ"
    cache = RedisCache(f"redis://:{secret}@127.0.0.1:{free_port()}/0", timeout=0.05)
    await cache.get("x")
    await cache.get("x")
    assert secret not in repr(cache)
    assert secret not in str(await cache.health_check())


async def test_no_url_is_in_process_and_healthy() -> None:
    cache = RedisCache(url="", prefix="x")
    assert cache.worker is None
    await cache.set("a", 1, 10.0)
    got = await cache.get("a")
    assert got is not None and got.value == 1
    assert (await cache.health_check())["status"] == "healthy"


async def test_fallback_serves_the_value_another_process_cached(
    redis_url: str, prefix: str
) -> None:
    """@fallback(cache=True) on the Redis cache: process B serves what process A stored."""
    previous = get_fallback_cache()
    try:
        cache_a = enable_redis_cache(redis_url)
        cache_a.prefix = f"{prefix}:cache:"
        calls = {"fail": False}

        @fallback(cache=True, name=f"quotes-{prefix}")
        async def quote(symbol: str) -> float:
            if calls["fail"]:
                raise ConnectionError("vendor down")
            return 101.25

        assert await quote("MSFT") == 101.25
        assert cache_a.worker is not None
        await cache_a.worker.drain()
        cache_b = RedisCache(redis_url, prefix=prefix)
        set_fallback_cache(cache_b)  # a fresh process: empty in-process layer
        calls["fail"] = True
        assert await quote("MSFT") == 101.25
        assert cache_b.hits["redis"] == 1
    finally:
        set_fallback_cache(previous)


async def test_cache_health_component_registers(redis_url: str, prefix: str) -> None:
    registry = HealthRegistry()
    register_health_checks(registry, RedisCache(redis_url, prefix=prefix))
    report = await registry.check_all()
    assert report.components["cache"].status == "healthy"
    assert report.components["cache"].critical is False


def test_sync_calls_on_a_dead_redis_are_bounded_and_quiet() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.1)
    cache.set_sync("k", {"v": 1}, 30.0)
    for _ in range(4):
        started = time.perf_counter()
        got = cache.get_sync("k")
        assert time.perf_counter() - started < 0.15
        assert got is not None and got.value == {"v": 1}
    assert cache.worker is not None and cache.worker.guard.is_open
