"""Redis faults against a real private server: killed and restarted, black-holed. No caller
ever sees a redis exception, no call is slowed by more than ``redis.timeout``, and the cache and
the shared circuit state recover by themselves."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from resilient import (
    CircuitOpenError,
    breaker,
    breakers,
    fallback,
    get_fallback_cache,
    set_fallback_cache,
)
from resilient._backends.redis import RedisCache
from resilient._backends.shared_state import RedisSharedState
from resilient._policies.breaker_storage import get_shared_backend, set_shared_backend
from resilient._policies.cache import cache_key
from resilient.testing.faults import FaultProxy
from resilient.testing.servers import RedisServer

TIMEOUT = 0.1
SLACK = 0.05  # scheduling noise on a loaded 2-core machine
PERMIT = 0.3  # how long a half-open permit answer is waited for


async def until(predicate: Any, limit: float) -> float:
    started = time.perf_counter()
    while not await predicate():
        assert time.perf_counter() - started < limit, "did not recover in time"
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


@pytest.fixture
async def cache(redis_srv: RedisServer) -> AsyncIterator[RedisCache]:
    if not redis_srv.running:
        redis_srv.start()
    previous = get_fallback_cache()
    cache = RedisCache(redis_srv.url, timeout=TIMEOUT, prefix=f"f-{uuid.uuid4().hex[:6]}")
    set_fallback_cache(cache)
    yield cache
    set_fallback_cache(previous)


async def test_killed_and_restarted_redis(redis_srv: RedisServer, cache: RedisCache) -> None:
    vendor = {"up": True}
    name = f"quote-{uuid.uuid4().hex[:6]}"

    @fallback(cache=True, name=name)
    async def quote(symbol: str) -> float:
        if not vendor["up"]:
            raise ConnectionError("vendor down")
        return 250.0

    assert await quote("NVDA") == 250.0
    assert cache.worker is not None
    await cache.worker.drain()

    redis_srv.kill()
    vendor["up"] = False
    slowest = 0.0
    for i in range(30):
        started = time.perf_counter()
        assert await quote("NVDA") == 250.0  # served from the in-process copy
        slowest = max(slowest, time.perf_counter() - started)
        await cache.set(f"k{i}", i, 30.0)
        started = time.perf_counter()
        got = await cache.get(f"k{i}")
        slowest = max(slowest, time.perf_counter() - started)
        assert got is not None and got.value == i
        await asyncio.sleep(0.01)
    assert slowest < TIMEOUT + SLACK
    assert (await cache.health_check())["status"] == "degraded"

    redis_srv.start()
    vendor["up"] = True
    reader = RedisCache(redis_srv.url, timeout=TIMEOUT, prefix=cache.prefix.split(":")[0])

    async def recovered() -> bool:
        await quote("NVDA")
        await cache.worker.drain()  # type: ignore[union-attr]
        found = await reader.entry(cache_key(name, ("NVDA",), {}))
        return found is not None and found.source == "redis"

    took = await until(recovered, 5.0)
    assert took < 3.0  # one probe per second brings it back
    assert (await cache.health_check())["status"] == "healthy"


async def test_blackholed_redis_slows_calls_by_at_most_the_timeout(
    redis_srv: RedisServer,
) -> None:
    if not redis_srv.running:
        redis_srv.start()
    async with FaultProxy("127.0.0.1", redis_srv.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        previous = get_fallback_cache()
        cache = RedisCache(url, timeout=TIMEOUT, prefix=f"b-{uuid.uuid4().hex[:6]}")
        set_fallback_cache(cache)
        vendor = {"up": True}

        @fallback(cache=True, name=f"bh-{uuid.uuid4().hex[:6]}")
        async def quote(symbol: str) -> float:
            if not vendor["up"]:
                raise ConnectionError("vendor down")
            return 99.0

        try:
            assert await quote("IBM") == 99.0
            assert cache.worker is not None
            await cache.worker.drain()
            proxy.blackhole = True
            success, failure = [], []
            for _ in range(10):
                vendor["up"] = True
                started = time.perf_counter()
                assert await quote("IBM") == 99.0
                success.append(time.perf_counter() - started)
                vendor["up"] = False
                started = time.perf_counter()
                assert await quote("IBM") == 99.0  # fallback, from the in-process copy
                failure.append(time.perf_counter() - started)
            assert max(success) < SLACK  # writes are behind the call, never in it
            assert max(failure) < TIMEOUT + SLACK
            assert sorted(failure)[5] < 0.01  # the guard skips the silent Redis
        finally:
            proxy.heal()
            set_fallback_cache(previous)


@pytest.fixture
async def shared(redis_srv: RedisServer) -> AsyncIterator[RedisSharedState]:
    if not redis_srv.running:
        redis_srv.start()
    previous = get_shared_backend()
    state = RedisSharedState(redis_srv.url, timeout=TIMEOUT, prefix=f"s-{uuid.uuid4().hex[:6]}")
    set_shared_backend(state)
    yield state
    set_shared_backend(previous)
    state.close()


async def test_shared_breaker_survives_a_redis_restart(
    redis_srv: RedisServer, shared: RedisSharedState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis down: the breaker keeps working locally and health says so; back: it resyncs."""
    monkeypatch.setenv("AI_TRADER_REDIS__URL", redis_srv.url)
    from resilient.config import reload_config

    reload_config()
    name = f"rb-{uuid.uuid4().hex[:6]}"
    try:

        @breaker(name, shared=True, failure_threshold=2, reset_timeout=60.0)
        async def svc(fail: bool) -> str:
            if fail:
                raise ConnectionError("down")
            return "ok"

        assert await svc(False) == "ok"
        started = time.perf_counter()
        while not shared.healthy:
            assert time.perf_counter() - started < 2.0
            await asyncio.sleep(0.01)

        redis_srv.kill()
        slowest = 0.0
        for _ in range(50):
            started = time.perf_counter()
            assert await svc(False) == "ok"
            slowest = max(slowest, time.perf_counter() - started)
        assert slowest < 0.01  # local state: Redis is not on the call path

        async def degraded() -> bool:
            return (await shared.health_check())["status"] == "degraded"

        await until(degraded, 3.0)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await svc(True)
        assert breakers.get(name).state == "open"  # tripped locally while Redis is down

        redis_srv.start()

        async def healthy_and_published() -> bool:
            if (await shared.health_check())["status"] != "healthy":
                return False
            client = aioredis.Redis.from_url(redis_srv.url, decode_responses=True)
            try:
                state = await client.hget(shared._key(name), "state")
            finally:
                await client.aclose()
            return state == "open"

        await until(healthy_and_published, 5.0)  # the queued transition reached Redis
    finally:
        breakers.remove(name)
        monkeypatch.delenv("AI_TRADER_REDIS__URL")
        reload_config()


async def test_blackholed_redis_never_slows_a_shared_breaker(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Silent Redis: closed calls cost nothing extra, a half-open permit costs at most the
    permit bound (then local permits), and health reports the shared state degraded."""
    if not redis_srv.running:
        redis_srv.start()
    from resilient.config import reload_config

    async with FaultProxy("127.0.0.1", redis_srv.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        monkeypatch.setenv("AI_TRADER_REDIS__URL", url)
        reload_config()
        previous = get_shared_backend()
        state = RedisSharedState(
            url, timeout=TIMEOUT, prefix=f"q-{uuid.uuid4().hex[:6]}", permit_timeout=PERMIT
        )
        set_shared_backend(state)
        name = f"bhb-{uuid.uuid4().hex[:6]}"
        try:

            @breaker(name, shared=True, failure_threshold=1, reset_timeout=0.2)
            async def svc(fail: bool) -> str:
                if fail:
                    raise ConnectionError("down")
                return "ok"

            assert await svc(False) == "ok"
            started = time.perf_counter()
            while not state.healthy:
                assert time.perf_counter() - started < 2.0
                await asyncio.sleep(0.01)
            proxy.blackhole = True
            slowest = 0.0
            for _ in range(50):
                started = time.perf_counter()
                assert await svc(False) == "ok"
                slowest = max(slowest, time.perf_counter() - started)
            assert slowest < 0.01
            with pytest.raises(ConnectionError):
                await svc(True)
            assert breakers.get(name).state == "open"
            await asyncio.sleep(0.25)
            # half-open: each call waits at most the permit bound. While the listener still
            # counts Redis as reachable the call is refused (Redis may only be slow); once it
            # has lost Redis too, the trial runs on a local permit
            deadline = time.perf_counter() + 5.0
            while True:
                started = time.perf_counter()
                try:
                    result = await svc(False)
                except CircuitOpenError:
                    result = None
                assert time.perf_counter() - started < PERMIT + SLACK
                if result == "ok":
                    break
                assert time.perf_counter() < deadline, "no local trial once Redis was lost"
                await asyncio.sleep(0.05)
            assert not state.healthy  # only after the listener lost Redis
            assert breakers.get(name).state == "closed"

            async def degraded() -> bool:
                return (await state.health_check())["status"] == "degraded"

            await until(degraded, 3.0)
        finally:
            proxy.heal()
            breakers.remove(name)
            set_shared_backend(previous)
            state.close()
            monkeypatch.delenv("AI_TRADER_REDIS__URL")
            reload_config()


async def test_slow_redis_never_turns_a_permit_into_a_local_trial(
    redis_srv: RedisServer,
) -> None:
    """Redis answers, slower than redis.timeout: every process waits for its permit answer and
    exactly ``limit`` trials are granted cluster-wide (before: a slow answer was taken as
    "unreachable" and each process ran its own trial)."""
    if not redis_srv.running:
        redis_srv.start()
    prefix = f"slow-{uuid.uuid4().hex[:6]}"
    async with FaultProxy("127.0.0.1", redis_srv.port) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        direct = RedisSharedState(redis_srv.url, prefix=prefix, origin="operator")
        # 12 "processes": each its own backend and worker thread (its own connection)
        from resilient._backends.redis import RedisWorker

        workers = [RedisWorker(url, timeout=TIMEOUT) for _ in range(12)]
        states = [
            RedisSharedState(url, timeout=TIMEOUT, prefix=prefix, origin=f"p{i}", worker=w)
            for i, w in enumerate(workers)
        ]
        try:
            await direct.reset("svc", state="open")
            for w in workers:  # connect first, then make every answer slow
                await w.call(lambda r: r.ping(), 1.0)
            proxy.latency = 0.09  # a round trip takes ~0.18 s > redis.timeout (0.1 s)
            await asyncio.sleep(0.05)
            answers = await asyncio.gather(*(st.acquire_permit("svc", 1, 0.01) for st in states))
            assert answers.count(True) == 1, answers
            assert None not in answers, answers  # nobody took a local trial
        finally:
            proxy.heal()
            for st in states:
                st.close()
            for w in workers:
                w.close()
            direct.close()
