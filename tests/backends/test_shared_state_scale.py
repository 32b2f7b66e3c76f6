"""Shared state that scales with changes, not names: idle cost flat in the number of watched
breakers, each name read in full once, a missed message healed by reading only what changed."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from resilient._backends.redis import RedisWorker, close_workers
from resilient._backends.shared_state import _TOUCH, INDEX_HORIZON_MS, RedisSharedState, _eval
from resilient._policies.breaker_storage import CircuitRecord
from resilient.testing.servers import redis_server


@pytest.fixture(autouse=True)
def _workers() -> Iterator[None]:
    yield
    close_workers()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    name = f"sc-{uuid.uuid4().hex[:8]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=f"{name}:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])
    await client.aclose()


async def until(predicate: object, limit: float) -> None:
    deadline = time.perf_counter() + limit
    while not predicate():  # type: ignore[operator]
        assert time.perf_counter() < deadline, "condition not met"
        await asyncio.sleep(0.01)


async def _commands(url: str) -> int:
    client = aioredis.Redis.from_url(url)
    info = await client.info("stats")
    await client.aclose()
    return int(info["total_commands_processed"])


async def _idle_round_trips(url: str, prefix: str, names: int, seconds: float) -> tuple[int, int]:
    """(Redis commands run while idle, records read) for one process watching ``names``
    breakers (a private server: its command count is this process's alone)."""
    worker = RedisWorker(url, timeout=0.1)
    state = RedisSharedState(url, prefix=prefix, worker=worker, resync_interval=0.25)
    try:
        for i in range(names):
            state.watch(f"b{i}", lambda r: None)
        await until(lambda: state.healthy and state.records_read >= names, 10.0)
        before = await _commands(url)
        healthy = 0
        samples = int(seconds / 0.05)
        for _ in range(samples):
            await asyncio.sleep(0.05)
            healthy += state.health()["status"] == "healthy"
        assert healthy == samples
        return await _commands(url) - before - 1, state.records_read
    finally:
        state.close()
        worker.close()


@pytest.fixture(scope="module")
def private_url() -> Iterator[str]:
    with redis_server() as server:
        yield server.url


async def test_idle_cost_is_flat_in_the_number_of_names(private_url: str) -> None:
    """Before: every process re-read every breaker each second (1,000 names: degraded in up
    to 81 % of samples; 2,000 names: never healthy)."""
    redis_url, prefix = private_url, "idle"
    # stored records for every name, as a busy cluster would have
    writer = RedisSharedState(redis_url, prefix=prefix, origin="writer")
    client = aioredis.Redis.from_url(redis_url)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(3000):
            record = {"state": "closed", "version": "1", "origin": "writer", "name": f"b{i}"}
            pipe.hset(writer._key(f"b{i}"), mapping=record)
            pipe.zadd(writer.index, {f"b{i}": int(time.time() * 1000)})
        await pipe.execute()
    await client.aclose()
    writer.close()
    small, read_small = await _idle_round_trips(redis_url, prefix, 10, 1.5)
    large, read_large = await _idle_round_trips(redis_url, prefix, 3000, 1.5)
    assert read_small == 10 and read_large == 3000  # each name read in full once
    # 1.5 s at one poll per 0.25 s: 6 polls of 3 commands (EVAL, TIME, ZRANGEBYSCORE),
    # whatever the number of names (before: one HGETALL per name per resync: 3,000 names
    # made about 18,000 commands)
    assert large <= small + 3, (small, large)
    assert large <= 24, large


async def test_a_missed_message_is_healed_by_reading_only_the_changed_name(
    redis_url: str, prefix: str
) -> None:
    state = RedisSharedState(redis_url, prefix=prefix, resync_interval=0.1)
    seen: list[CircuitRecord] = []
    try:
        for i in range(500):
            state.watch(f"n{i}", seen.append if i == 7 else (lambda r: None))
        await until(lambda: state.healthy and state.records_read >= 500, 5.0)
        read = state.records_read
        # another process changes n7, but its message is lost (written without PUBLISH)
        client = aioredis.Redis.from_url(redis_url)
        await client.hset(
            state._key("n7"),
            mapping={
                "state": "open",
                "opened_at": repr(time.time()),
                "version": "77",
                "origin": "elsewhere",
                "forced": "0",
                "name": "n7",
            },
        )
        await client.aclose()
        await state.worker.call(_eval(_TOUCH, [state.index], ["n7", str(INDEX_HORIZON_MS)]))
        await until(lambda: any(r.version == 77 for r in seen), 2.0)
        assert seen[-1].state == "open"
        assert state.records_read - read <= 2  # n7 (once or twice), not the 500 names
    finally:
        state.close()


async def test_newly_watched_names_are_read_in_batches(redis_url: str, prefix: str) -> None:
    writer = RedisSharedState(redis_url, prefix=prefix, origin="writer")
    await writer.reset("late", state="open")
    writer.close()
    state = RedisSharedState(redis_url, prefix=prefix)
    seen: list[CircuitRecord] = []
    try:
        state.watch("early", lambda r: None)
        await until(lambda: state.healthy, 5.0)
        state.watch("late", seen.append)  # watched after the listener started
        await until(lambda: bool(seen), 2.0)
        assert seen[0].state == "open"
    finally:
        state.close()


async def test_refused_permit_requests_ask_again_at_jittered_times(
    redis_url: str, prefix: str
) -> None:
    """Before: every refused process asked again exactly 50 ms later, all together."""
    from resilient._core import clock as _clock

    worker = RedisWorker(redis_url, timeout=0.5)
    states = [
        RedisSharedState(redis_url, prefix=prefix, origin=f"p{i}", worker=worker) for i in range(20)
    ]
    try:
        assert await states[0].acquire_permit("j", 1, 5.0) is True
        pauses = []
        for st in states[1:]:
            assert await st.acquire_permit("j", 1, 5.0) is False
            pauses.append(st._deny_until["j"] - _clock._current.monotonic())
        assert all(0.0 < p <= 0.08 for p in pauses), pauses
        assert max(pauses) - min(pauses) > 0.02, pauses  # spread, not in lockstep
    finally:
        for st in states:
            st.close()
        worker.close()


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    limit=st.integers(1, 3),
    ops=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=14),
)
def test_permits_are_exact_under_any_interleaving(
    redis_url: str, limit: int, ops: list[tuple[int, bool]]
) -> None:
    """Any sequence of acquires (True) and releases (False) by four processes: a grant only
    while fewer than ``limit`` are held, never a refusal while one is free, and a release
    frees exactly its holder's permit."""
    prefix = f"ex-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        worker = RedisWorker(redis_url, timeout=0.5)
        states = [
            RedisSharedState(redis_url, prefix=prefix, origin=f"p{i}", worker=worker)
            for i in range(4)
        ]
        held = [0, 0, 0, 0]
        try:
            for who, acquire in ops:
                state = states[who]
                if acquire:
                    state._deny_until.clear()  # no remembered refusal: ask Redis each time
                    got = await state.acquire_permit("x", limit, 30.0)
                    assert got is (sum(held) < limit), (held, got)
                    held[who] += bool(got)
                elif held[who]:
                    state.release_permit("x")
                    held[who] -= 1
                    await until(lambda s=state: not s._ops, 2.0)  # written in the background
                    await asyncio.sleep(0.002)
        finally:
            for state in states:
                state.close()
            worker.close()
            client = aioredis.Redis.from_url(redis_url)
            keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(run())
