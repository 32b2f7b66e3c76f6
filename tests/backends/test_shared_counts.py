"""Cluster-wide counting costs ≤ 0.05 Redis round trips per call in steady state."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

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


def test_total_outage_across_processes_stays_within_the_ratio(redis_url: str) -> None:
    """4 processes sharing one Redis, each 10 requests a second for 6 s, every attempt failing,
    default budget settings: at most 1.3 attempts per request across the cluster (one floor
    of 10 retries a second for the cluster still allowed 1.5-1.6)."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "faults"))
    from _counts_worker import count_worker

    workers = 4
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    name, prefix = f"outage-{uuid.uuid4().hex[:6]}", f"sc-{uuid.uuid4().hex[:8]}"
    procs = [
        ctx.Process(
            target=count_worker,
            args=(i, redis_url, prefix, name, "outage", go, out),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        found: list[tuple[int, int, int]] = []
        deadline = time.monotonic() + 60
        while len(found) < 2 * workers:
            try:
                item = out.get(timeout=0.5)
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                assert not dead, f"workers died: {dead}"
                assert time.monotonic() < deadline, f"workers did not report: {found}"
                continue
            if item[0] == "ready":
                found.append((-1, 0, 0))
                if len(found) == workers:
                    go.set()
            else:
                found.append(item)
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    results = found[workers:]
    requests = sum(r for _, r, _ in results)
    attempts = sum(a for _, _, a in results)
    print(f"\n{workers} processes: {attempts} attempts for {requests} requests")
    assert requests == workers * 60
    assert attempts / requests <= 1.3, attempts / requests
