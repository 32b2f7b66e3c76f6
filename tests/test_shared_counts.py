"""Cluster-wide counting costs ≤ 0.05 Redis round trips per call in steady state."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import tenacity

from resilient import breaker, breakers, retry
from resilient._backends.redis import close_workers
from resilient._backends.shared_counts import get_counts
from resilient._backends.shared_state import RedisSharedState, install_shared_backend
from resilient._policies.breaker_storage import get_shared_backend, set_shared_backend
from resilient.config import reload_config


@pytest.fixture
def shared_env(redis_url: str) -> Iterator[str]:
    prefix = f"sc-{uuid.uuid4().hex[:8]}"
    os.environ["AI_TRADER_REDIS__URL"] = redis_url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    reload_config()
    previous = get_shared_backend()
    try:
        yield prefix
    finally:
        backend = get_shared_backend()
        set_shared_backend(previous)
        if isinstance(backend, RedisSharedState):
            backend.close()
        del os.environ["AI_TRADER_REDIS__URL"]
        del os.environ["AI_TRADER_REDIS__KEY_PREFIX"]
        reload_config()
        close_workers()


async def test_steady_state_counting_costs_at_most_005_round_trips_per_call(
    shared_env: str,
) -> None:
    state = install_shared_backend()
    name = f"steady-{uuid.uuid4().hex[:6]}"
    flaky = {"fail": 0}

    @retry(max_attempts=3, wait=tenacity.wait_none(), name=name)
    @breaker(name, shared=True, failure_threshold=50)
    async def svc() -> int:
        if flaky["fail"]:
            flaky["fail"] -= 1
            raise ConnectionError("blip")
        return 1

    try:
        await svc()
        deadline = time.monotonic() + 5
        while not state.healthy:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        counts = get_counts(state)
        before = state.worker.round_trips
        calls = 0
        started = time.monotonic()
        while time.monotonic() - started < 2.0:  # ~2 s of traffic with a blip now and then
            for _ in range(100):
                await svc()
                calls += 1
            if calls % 2000 == 0:
                flaky["fail"] = 1
            await asyncio.sleep(0.002)
        per_call = (state.worker.round_trips - before) / calls
        print(f"\n{calls} calls, {counts.flushes} count flushes, {per_call:.4f} round trips/call")
        assert per_call <= 0.05, per_call
        assert counts.flushes >= 1  # the counts did reach Redis
    finally:
        breakers.remove(name)
