"""Shared circuit state, the fallback cache, the rate limiter and ``resilient breakers`` on a
real 3-node Redis Cluster and behind Sentinel (master + replica + 3 Sentinels), including a
failover in the middle of shared-breaker traffic and a replica reported as read-only."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator

import pytest

from resilient import breaker, breakers
from resilient._backends.redis import RedisCache, RedisUnavailable, close_workers
from resilient._backends.shared_state import RedisSharedState, install_shared_backend
from resilient._cli import main
from resilient._policies.breaker_storage import (
    CircuitRecord,
    get_shared_backend,
    set_shared_backend,
)
from resilient.config import reload_config
from resilient.testing.servers import (
    RedisClusterServer,
    RedisSentinelServer,
    RedisServer,
    redis_cluster,
    redis_sentinel,
)
from resilient.trading import RateLimitExceeded, ServiceRateLimiter


def _need_servers() -> None:
    if shutil.which("redis-server") and shutil.which("redis-cli"):
        return
    message = "redis-server / redis-cli are not installed"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterServer]:
    _need_servers()
    with redis_cluster() as servers:
        yield servers


@pytest.fixture(scope="module")
def sentinel() -> Iterator[RedisSentinelServer]:
    _need_servers()
    with redis_sentinel() as servers:
        yield servers


@pytest.fixture(autouse=True)
def _workers() -> Iterator[None]:
    yield
    close_workers()


async def wait_for(predicate: object, limit: float = 3.0) -> float:
    started = time.perf_counter()
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - started > limit:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def stored(backend: RedisSharedState, name: str) -> str | None:
    try:
        rec = await backend.record(name)
    except RedisUnavailable:
        return None
    return rec.state if rec else None


async def _shared_roundtrip(url: str) -> None:
    """Trip from A reaches B by pub/sub; permits are cluster-wide; records are stored."""
    prefix = f"topo-{uuid.uuid4().hex[:6]}"
    a = RedisSharedState(url, prefix=prefix, timeout=0.5)
    b = RedisSharedState(url, prefix=prefix, timeout=0.5, origin="process-b")
    try:
        seen: list[CircuitRecord] = []
        names = [f"svc-{i}" for i in range(20)] + ["odd{name}", "}x{"]
        for name in names:
            b.watch(name, seen.append)
        await wait_for(lambda: b.healthy)
        for i, name in enumerate(names):
            a.publish(name, CircuitRecord("open", time.time(), 1000 + i, "other"))
        await wait_for(lambda: len({r.version for r in seen}) == len(names))
        for name in names:
            assert await stored(a, name) == "open"
            await a.reset(name, state="open")
        # the open period must elapse before a permit: reset_timeout 0.05 s
        await asyncio.sleep(0.1)
        assert await a.acquire_permit("svc-0", 1, 0.05) is True
        assert await b.acquire_permit("svc-0", 1, 0.05) is False
        records = await a.records()
        assert set(names) <= set(records)
        assert b.health()["status"] == "healthy"
    finally:
        a.close()
        b.close()


async def test_shared_state_on_a_cluster(cluster: RedisClusterServer) -> None:
    """Before: every script failed with a cross-slot or MOVED error on a cluster."""
    await _shared_roundtrip(cluster.url)


async def test_shared_state_behind_sentinel(sentinel: RedisSentinelServer) -> None:
    await _shared_roundtrip(sentinel.url)


async def test_fallback_cache_on_a_cluster_and_sentinel(
    cluster: RedisClusterServer, sentinel: RedisSentinelServer
) -> None:
    for url in (cluster.url, sentinel.url):
        prefix = f"cache-{uuid.uuid4().hex[:6]}"
        writer = RedisCache(url, prefix=prefix, timeout=0.5)
        reader = RedisCache(url, prefix=prefix, timeout=0.5)  # another process's view
        for i in range(30):
            writer.set_sync(f"k{i}", {"price": i})
        assert writer.worker is not None
        await writer.worker.drain()
        for i in range(30):
            reader.local.set_sync(f"k{i}", None, 0.0)
            entry = await reader.entry(f"k{i}")
            assert entry is not None and entry.source == "redis" and entry.value == {"price": i}
        assert (await reader.health_check())["status"] == "healthy"
        close_workers()


async def test_rate_limiter_shares_counts_on_a_cluster_and_sentinel(
    cluster: RedisClusterServer, sentinel: RedisSentinelServer
) -> None:
    for url in (cluster.url, sentinel.url):
        name = f"rl-{uuid.uuid4().hex[:6]}"
        first = ServiceRateLimiter(name, "3/minute", max_wait=0.0, redis_url=url, timeout=0.5)
        second = ServiceRateLimiter(name, "3/minute", max_wait=0.0, redis_url=url, timeout=0.5)
        await first.acquire()
        await first.acquire()
        await second.acquire()
        with pytest.raises(RateLimitExceeded):
            await second.acquire()  # the budget is shared
        assert not first.degraded and not second.degraded
        await first.aclose()
        await second.aclose()


@pytest.fixture
def shared_env(sentinel: RedisSentinelServer) -> Iterator[str]:
    prefix = f"fo-{uuid.uuid4().hex[:6]}"
    os.environ["AI_TRADER_REDIS__URL"] = sentinel.url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    os.environ["AI_TRADER_REDIS__TIMEOUT"] = "0.2"
    reload_config()
    previous = get_shared_backend()
    try:
        yield prefix
    finally:
        backend = get_shared_backend()
        set_shared_backend(previous)
        if isinstance(backend, RedisSharedState):
            backend.close()
        for key in ("URL", "KEY_PREFIX", "TIMEOUT"):
            del os.environ[f"AI_TRADER_REDIS__{key}"]
        reload_config()


async def test_failover_in_the_middle_of_shared_breaker_traffic(
    sentinel: RedisSentinelServer, shared_env: str
) -> None:
    """The master dies under traffic: no caller sees a Redis error, the trip made during the
    failover reaches Redis and the other process once the new master is found.

    Before: after a failover every write failed with ReadOnlyError (a plain URL) and the new
    master was never found; Sentinel URLs were refused."""
    state = install_shared_backend()
    peer = RedisSharedState(sentinel.url, prefix=shared_env, timeout=0.2, origin="peer")
    name = f"fo-{uuid.uuid4().hex[:6]}"
    fail = {"on": False}

    @breaker(name, shared=True, failure_threshold=3, reset_timeout=60.0)
    async def svc() -> str:
        if fail["on"]:
            raise ConnectionError("upstream down")
        return "ok"

    seen: list[CircuitRecord] = []
    peer.watch(name, seen.append)
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def traffic() -> int:
        calls = 0
        while not stop.is_set():
            try:
                await svc()
            except ConnectionError:
                pass  # the service's own error
            except Exception as exc:  # CircuitOpenError is fine; a Redis error is not
                if "Circuit" not in type(exc).__name__:
                    errors.append(exc)
            calls += 1
            await asyncio.sleep(0.001)
        return calls

    try:
        assert await svc() == "ok"
        await wait_for(lambda: state.healthy and peer.healthy, 5.0)
        runner = asyncio.create_task(traffic())
        await asyncio.sleep(0.2)
        old = sentinel.master_port()
        failover = asyncio.create_task(asyncio.to_thread(sentinel.failover))
        await asyncio.sleep(0.05)
        fail["on"] = True  # the service fails while Redis fails over: the breaker trips
        b = breakers.get(name)
        await wait_for(lambda: b.state == "open", 5.0)
        new = await failover
        assert new != old
        # no trip is lost: it reaches the new master and the other process
        await wait_for(lambda: any(r.state == "open" for r in seen), 15.0)
        deadline = time.perf_counter() + 10
        while await stored(peer, name) != "open":
            assert time.perf_counter() < deadline, "trip never reached the new master"
            await asyncio.sleep(0.05)
        stop.set()
        calls = await runner
        assert calls > 50
        assert errors == []
        # the CLI finds the new master too
        peer.close()
        set_shared_backend(None)
        state.close()
        close_workers()
        assert await asyncio.to_thread(main, ["breakers", "--json"]) == 0
    finally:
        stop.set()
        peer.close()
        breakers.remove(name)


def _cli_env(url: str, prefix: str) -> None:
    os.environ["AI_TRADER_REDIS__URL"] = url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    os.environ["AI_TRADER_REDIS__TIMEOUT"] = "0.5"
    reload_config()


def test_breakers_cli_on_cluster_and_sentinel(
    cluster: RedisClusterServer,
    sentinel: RedisSentinelServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: the CLI refused these URLs (or knew no breakers on a cluster node)."""
    for url in (cluster.url, sentinel.url):
        prefix = f"cli-{uuid.uuid4().hex[:6]}"

        async def store(url: str = url, prefix: str = prefix) -> None:
            st = RedisSharedState(url, prefix=prefix, timeout=0.5, origin="elsewhere")
            for i in range(12):
                await st.reset(f"svc-{i}", state="open")

        asyncio.run(store())
        close_workers()
        _cli_env(url, prefix)
        try:
            assert main(["breakers", "--json"]) == 0
            listed = json.loads(capsys.readouterr().out)
            assert {f"svc-{i}" for i in range(12)} <= set(listed)
            assert all(listed[f"svc-{i}"]["state"] == "open" for i in range(12))
            assert main(["breakers", "reset", "svc-3"]) == 0
            assert "reset to closed cluster-wide" in capsys.readouterr().out
            assert main(["breakers", "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["svc-3"]["state"] == "closed"
        finally:
            for key in ("URL", "KEY_PREFIX", "TIMEOUT"):
                del os.environ[f"AI_TRADER_REDIS__{key}"]
            reload_config()
            close_workers()


async def test_read_only_replica_is_reported_as_such(sentinel: RedisSentinelServer) -> None:
    """A plain URL that points at a replica: health says read-only, not unreachable."""
    replica = RedisServer(args=("--replicaof", "127.0.0.1", str(sentinel.master_port())))
    replica.start()
    url = f"redis://127.0.0.1:{replica.port}/0"
    state = RedisSharedState(url, prefix=f"ro-{uuid.uuid4().hex[:6]}", timeout=0.5)
    try:
        cache = RedisCache(url, prefix=f"ro-{uuid.uuid4().hex[:6]}", timeout=0.5)
        health = await cache.health_check()
        assert health["status"] == "degraded"
        assert "read-only replica" in health["detail"] and "unreachable" not in health["detail"]

        state.watch("x", lambda r: None)
        state.publish("x", CircuitRecord("open", time.time(), 5, "me"))
        await wait_for(lambda: state.health()["status"] == "degraded", 5.0)
        assert "read-only replica" in state.health()["detail"]
    finally:
        state.close()
        replica.destroy()


async def test_a_single_server_url_on_a_cluster_node_names_the_fix(
    cluster: RedisClusterServer,
) -> None:
    """Before: the cache was still called healthy while nothing reached Redis."""
    url = f"redis://127.0.0.1:{cluster.ports[0]}/0"
    found = False
    for i in range(20):  # some keys hash to this node's slots: find one that does not
        cache = RedisCache(url, prefix=f"node{i}-{uuid.uuid4().hex[:4]}", timeout=0.5)
        health = await cache.health_check()
        if health["status"] == "degraded":
            assert "redis+cluster://" in health["detail"], health["detail"]
            found = True
            break
        close_workers()
    assert found


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_trading_state_and_order_rate_are_shared_on_every_topology(
    topology: str, request: pytest.FixtureRequest
) -> None:
    """trading.state and the order-rate throttle reach every worker through a Redis Cluster or
    Sentinel too (they used a single-server client and stayed per process there)."""
    from dataclasses import replace

    from resilient import RiskLimitError
    from resilient.config import current_config
    from resilient.trading._state import TradingState
    from resilient.trading._throttle import OrderThrottle

    url = request.getfixturevalue(topology).url
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    base = current_config()
    config = replace(base, redis=replace(base.redis, url=url, key_prefix=prefix, timeout=0.5))
    one, two = TradingState(config, poll_interval=0.05), TradingState(config, poll_interval=0.05)
    one.start()
    two.start()
    try:
        one.set("halted")
        deadline = time.monotonic() + 3.0
        while two.value != "halted" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert two.value == "halted"
    finally:
        one.stop()
        two.stop()
    a = OrderThrottle("svc", "3/minute", redis_url=url, key_prefix=prefix, timeout=0.5)
    b = OrderThrottle("svc", "3/minute", redis_url=url, key_prefix=prefix, timeout=0.5)
    assert not a.degraded and not b.degraded
    a.check()
    b.check()
    a.check()
    with pytest.raises(RiskLimitError):
        b.check()  # the fourth order in the minute, counted across both
