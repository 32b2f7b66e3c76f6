"""Circuit state shared through Redis: pub/sub propagation, compare-and-set transitions,
cluster-wide half-open permits, degradation when Redis is unreachable, and no Redis round trip
on the steady-state call path."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from resilient import CircuitOpenError, breaker, breakers
from resilient._backends.redis import RedisUnavailable, close_workers
from resilient._backends.shared_state import RedisSharedState, install_shared_backend
from resilient._policies.breaker_storage import (
    CircuitRecord,
    get_shared_backend,
    set_shared_backend,
)
from resilient.config import ConfigError, reload_config
from resilient.testing.servers import free_port


@pytest.fixture(autouse=True)
def _workers() -> Iterator[None]:
    yield
    close_workers()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    name = f"st-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{name}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def pair(redis_url: str, prefix: str) -> AsyncIterator[tuple[RedisSharedState, ...]]:
    a = RedisSharedState(redis_url, prefix=prefix)
    b = RedisSharedState(redis_url, prefix=prefix, origin="process-b")
    yield a, b
    a.close()
    b.close()


async def wait_for(predicate: object, limit: float = 1.0) -> float:
    """Seconds until ``predicate()`` holds (fails after ``limit``)."""
    started = time.perf_counter()
    while not predicate():  # type: ignore[operator]
        if time.perf_counter() - started > limit:
            raise AssertionError(f"condition not met within {limit}s")
        await asyncio.sleep(0.001)
    return time.perf_counter() - started


async def stored_state(backend: RedisSharedState, name: str) -> str | None:
    """The state stored in Redis for ``name``; ``None`` when absent or when this poll ran
    past the 0.1 s Redis bound (a busy machine), so polling loops simply ask again."""
    try:
        rec = await backend.record(name)
    except RedisUnavailable:
        return None
    return rec.state if rec else None


async def test_published_transition_reaches_other_watchers_fast(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, b = pair
    seen: list[CircuitRecord] = []
    b.watch("svc", seen.append)
    await wait_for(lambda: b.healthy)
    record = CircuitRecord("open", time.time(), int(time.time() * 1e6), "other-process")
    started = time.perf_counter()
    a.publish("svc", record)
    await wait_for(lambda: bool(seen), 1.0)
    assert time.perf_counter() - started < 0.05
    assert seen[-1] == record
    stored = await a.record("svc")
    assert stored is not None and stored.state == "open" and stored.version == record.version


async def test_stale_version_loses_and_the_writer_adopts_the_winner(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, _ = pair
    adopted: list[CircuitRecord] = []
    a.watch("svc", adopted.append)
    await wait_for(lambda: a.healthy)
    newer = CircuitRecord("open", time.time(), 200, "proc-x")
    a.publish("svc", newer)
    await asyncio.sleep(0.05)
    a.publish("svc", CircuitRecord("closed", None, 100, "proc-y"))
    await wait_for(lambda: any(r.version == 200 for r in adopted), 1.0)
    stored = await a.record("svc")
    assert stored is not None and stored.version == 200 and stored.state == "open"


async def test_half_open_permits_are_cluster_wide(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, b = pair
    assert await a.acquire_permit("p", 2, 5.0) is True
    assert await b.acquire_permit("p", 2, 5.0) is True
    assert await a.acquire_permit("p", 2, 5.0) is False
    b.release_permit("p")
    await asyncio.sleep(0.08)  # a's refusal is remembered 25-75 ms, jittered (no round trip)
    assert await a.acquire_permit("p", 2, 5.0) is True
    assert await asyncio.to_thread(b.acquire_permit_sync, "p", 2, 5.0) is False


async def test_no_permit_while_open_period_runs_or_forced(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, _ = pair
    await a.reset("o", state="open")
    assert await a.acquire_permit("o", 1, 0.3) is False  # opened just now, 0.3 s to go
    await asyncio.sleep(0.35)
    assert await a.acquire_permit("o", 1, 0.3) is True
    await a.reset("o", state="open", forced=True)
    await asyncio.sleep(0.35)
    assert await a.acquire_permit("o", 1, 0.3) is False


async def test_reset_bumps_version_and_clears_permits(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, b = pair
    seen: list[CircuitRecord] = []
    b.watch("r", seen.append)
    await wait_for(lambda: b.healthy)
    a.publish("r", CircuitRecord("open", time.time(), 10**15, "proc-z"))
    await wait_for(lambda: bool(seen))
    await asyncio.sleep(0.01)
    assert await a.acquire_permit("r", 1, 0.005) is True  # the open period is over
    version = await a.reset("r")
    assert version == 10**15 + 1
    await wait_for(lambda: seen[-1].state == "closed")
    assert await a.acquire_permit("r", 1, 5.0) is True  # permits were cleared
    records = await a.records()
    assert records["r"]["state"] == "closed"


async def test_unreachable_redis_degrades_to_local_state() -> None:
    state = RedisSharedState(f"redis://127.0.0.1:{free_port()}/0", timeout=0.05)
    try:
        state.watch("x", lambda r: None)
        started = time.perf_counter()
        assert await state.acquire_permit("x", 1, 1.0) is None
        assert time.perf_counter() - started < 0.1
        state.publish("x", CircuitRecord("open", time.time(), 1, "me"))  # must not raise
        await wait_for(lambda: state.last_error != "", 2.0)
        health = await state.health_check()
        assert health["status"] == "degraded"
        assert "local state" in health["detail"]
    finally:
        state.close()


@pytest.fixture
def shared_config(redis_url: str, prefix: str) -> Iterator[None]:
    os.environ["AI_TRADER_REDIS__URL"] = redis_url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    reload_config()
    previous = get_shared_backend()
    try:
        yield
    finally:
        backend = get_shared_backend()
        set_shared_backend(previous)
        if isinstance(backend, RedisSharedState):
            backend.close()
        del os.environ["AI_TRADER_REDIS__URL"]
        del os.environ["AI_TRADER_REDIS__KEY_PREFIX"]
        reload_config()


async def test_shared_breaker_needs_a_redis_url() -> None:
    with pytest.raises(ConfigError, match=r"redis\.url"):
        breaker(f"no-url-{uuid.uuid4().hex[:6]}", shared=True)


async def test_breaker_steady_state_costs_no_redis_round_trip(shared_config: None) -> None:
    state = install_shared_backend()
    name = f"steady-{uuid.uuid4().hex[:6]}"

    @breaker(name, shared=True, failure_threshold=3)
    async def ok() -> int:
        return 1

    try:
        await ok()
        await wait_for(lambda: state.healthy, 2.0)
        before = state.worker.round_trips
        calls = 5000
        for _ in range(calls):
            await ok()
        per_call = (state.worker.round_trips - before) / calls
        assert per_call <= 0.05
    finally:
        breakers.remove(name)


async def test_remote_trip_rejects_local_calls_and_local_trip_is_published(
    shared_config: None, prefix: str
) -> None:
    state = install_shared_backend()
    name = f"trip-{uuid.uuid4().hex[:6]}"
    calls = {"n": 0}

    @breaker(name, shared=True, failure_threshold=2, reset_timeout=30.0)
    async def svc(fail: bool) -> str:
        calls["n"] += 1
        if fail:
            raise ConnectionError("down")
        return "ok"

    try:
        assert await svc(False) == "ok"
        await wait_for(lambda: state.healthy, 2.0)
        other = RedisSharedState(state.url, prefix=prefix, origin="operator")
        await other.reset(name, state="open")  # another process trips it
        b = breakers.get(name)
        elapsed = await wait_for(lambda: b.state == "open", 1.0)
        assert elapsed < 0.05
        with pytest.raises(CircuitOpenError):
            await svc(False)
        await other.reset(name)  # operator reset, cluster-wide
        await wait_for(lambda: b.state == "closed", 1.0)
        for _ in range(2):
            with pytest.raises(ConnectionError):
                await svc(True)
        assert b.state == "open"

        deadline = time.perf_counter() + 2.0
        while await stored_state(other, name) != "open":
            assert time.perf_counter() < deadline, "local trip never reached Redis"
            await asyncio.sleep(0.005)
        other.close()
    finally:
        breakers.remove(name)


async def test_late_half_open_cannot_reopen_trials_of_a_newer_opening(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    """A half-open published after a newer opening (a failed trial) is refused."""
    a, _ = pair
    await a.reset("h", state="open")
    first = await a.record("h")
    assert first is not None and first.opened_at is not None
    newer_open = CircuitRecord("open", first.opened_at + 5.0, first.version + 10, "proc-t")
    a.publish("h", newer_open)
    await asyncio.sleep(0.05)
    late = CircuitRecord("half-open", first.opened_at, first.version + 20, "proc-late")
    a.publish("h", late)
    await asyncio.sleep(0.05)
    stored = await a.record("h")
    assert stored is not None and stored.state == "open"
    assert stored.version == newer_open.version


async def test_release_after_a_refusal_does_not_free_another_grant(
    pair: tuple[RedisSharedState, RedisSharedState],
) -> None:
    a, b = pair
    assert await a.acquire_permit("q", 1, 5.0) is True  # a's trial runs

    async def refused_caller() -> None:
        assert await b.acquire_permit("q", 1, 5.0) is False
        b.release_permit("q")  # what a breaker does after a refusal

    await asyncio.create_task(refused_caller())
    await asyncio.sleep(0.06)
    assert await b.acquire_permit("q", 1, 5.0) is False  # still held by a


async def test_sync_shared_breaker_asks_the_cluster_for_its_trial_permit(
    shared_config: None, prefix: str
) -> None:
    state = install_shared_backend()
    name = f"sync-{uuid.uuid4().hex[:6]}"

    @breaker(name, shared=True, failure_threshold=1, reset_timeout=0.2)
    def svc(fail: bool) -> str:
        if fail:
            raise ConnectionError("down")
        return "ok"

    other = RedisSharedState(state.url, prefix=prefix, origin="other-process")
    try:
        assert await asyncio.to_thread(svc, False) == "ok"
        with pytest.raises(ConnectionError):
            await asyncio.to_thread(svc, True)

        deadline = time.perf_counter() + 2.0
        while await stored_state(other, name) != "open":
            assert time.perf_counter() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.25)  # the open period is over
        assert await other.acquire_permit(name, 1, 0.2) is True  # another process probes
        with pytest.raises(CircuitOpenError):
            await asyncio.to_thread(svc, False)  # no second trial anywhere
        await other.reset(name)
        await wait_for(lambda: breakers.get(name).state == "closed", 1.0)
        assert await asyncio.to_thread(svc, False) == "ok"
    finally:
        other.close()
        breakers.remove(name)


async def test_first_shared_breaker_installs_the_redis_backend(
    shared_config: None, prefix: str
) -> None:
    """breaker(name, shared=True) keeps its state in Redis without a factory installing it."""
    set_shared_backend(None)
    name = f"auto-{uuid.uuid4().hex[:6]}"

    @breaker(name, shared=True, failure_threshold=1, reset_timeout=30.0)
    async def svc() -> str:
        raise ConnectionError("down")

    try:
        backend = get_shared_backend()
        assert isinstance(backend, RedisSharedState)
        with pytest.raises(ConnectionError):
            await svc()
        assert breakers.get(name).state == "open"
        other = RedisSharedState(backend.url, prefix=prefix, origin="observer")
        try:
            deadline = time.perf_counter() + 2.0
            while await stored_state(other, name) != "open":
                assert time.perf_counter() < deadline, "the trip never reached Redis"
                await asyncio.sleep(0.005)
        finally:
            other.close()
    finally:
        breakers.remove(name)
