"""Cluster-wide failure counts and retry budget across real processes sharing one Redis.

Before: 8 workers × 4 failures (threshold 5) left every breaker closed, and the retry budget
capped nothing across workers (each had its own ``min_per_second`` allowance)."""

from __future__ import annotations

import multiprocessing
import queue
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from resilient.testing.servers import RedisServer

sys.path.insert(0, str(Path(__file__).parent))
from _counts_worker import count_worker


def _run(redis_srv: RedisServer, scenario: str, workers: int) -> list[Any]:
    if not redis_srv.running:
        redis_srv.start()
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    name = f"cnt-{uuid.uuid4().hex[:6]}"
    prefix = f"cnt-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(
            target=count_worker,
            args=(i, redis_srv.url, prefix, name, scenario, go, out),
            daemon=True,
        )
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        deadline = time.monotonic() + 60
        ready = 0
        while ready < workers:
            try:
                out.get(timeout=0.5)
                ready += 1
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if not p.is_alive()]
                assert not dead, f"workers died before starting: {dead}"
                assert time.monotonic() < deadline, "workers did not start within 60 s"
        go.set()
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while len(found) < workers:
            try:
                found.append(out.get(timeout=0.5))
            except queue.Empty:
                dead = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
                assert not dead, f"workers died: {dead}"
                assert time.monotonic() < deadline, f"workers did not report: {found}"
        return found
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()


@pytest.mark.slow
def test_failures_across_processes_trip_the_shared_breaker(redis_srv: RedisServer) -> None:
    """4 processes × 2 failures = 8 ≥ threshold 5: the breaker opens in every process."""
    results = _run(redis_srv, "fail", 4)
    states = sorted(state for _, state, _ in results)
    assert states == ["open"] * 4, states


@pytest.mark.slow
def test_retry_budget_is_cluster_wide(redis_srv: RedisServer) -> None:
    """6 processes × 60 requests at 20/s under a total outage, max_attempts 4, ratio 0.2 and
    a floor of 2 retries/s, spent once by the cluster: it may retry about 0.2 × 360 + 2 = 74
    times (1.21 attempts per request); per-process budgets allowed 6 × 32 = 192 (1.53) when
    each process's floor refilled for ever."""
    results = _run(redis_srv, "budget", 6)
    requests = sum(r for _, r, _ in results)
    attempts = sum(a for _, _, a in results)
    per_request = attempts / requests
    print(
        f"\ncluster-wide retry budget: {attempts} attempts for {requests} requests "
        f"({per_request:.3f} per request)"
    )
    assert per_request <= 1.3, per_request
