"""Eight processes share one breaker through a real Redis: when one trips it every process
rejects within 50 ms, and in half-open only the permitted trial call runs cluster-wide."""

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
from _shared_worker import RESET, run_worker

WORKERS = 8


def _wait_mode_trip(results: dict[int, list[tuple[float, str]]]) -> float:
    """The time worker 0 tripped the breaker: its last failure before its first rejection."""
    events = results[0]
    first_reject = next(i for i, (_, what) in enumerate(events) if what == "rejected")
    return max(t for t, what in events[:first_reject] if what == "fail")


@pytest.mark.slow
def test_eight_processes_share_one_breaker(redis_srv: RedisServer) -> None:
    if not redis_srv.running:
        redis_srv.start()
    ctx = multiprocessing.get_context("spawn")
    mode, stop = ctx.Value("i", 0), ctx.Event()
    ready, out = ctx.Queue(), ctx.Queue()
    name = f"shared-{uuid.uuid4().hex[:6]}"
    prefix = f"mp-{uuid.uuid4().hex[:6]}"
    procs = [
        ctx.Process(
            target=run_worker,
            args=(i, redis_srv.url, prefix, name, mode, stop, ready, out),
            daemon=True,
        )
        for i in range(WORKERS)
    ]
    for p in procs:
        p.start()
    gathered: dict[int, Any] = {}
    traces: dict[int, Any] = {}
    try:
        deadline = time.monotonic() + 60
        for _ in range(WORKERS):
            while True:
                try:
                    ready.get(timeout=0.5)
                    break
                except queue.Empty:
                    dead = [(i, p.exitcode) for i, p in enumerate(procs) if not p.is_alive()]
                    assert not dead, f"workers died before starting: {dead}"
                    assert time.monotonic() < deadline, "workers did not start within 60 s"
        time.sleep(0.1)
        mode.value = 1  # worker 0's dependency fails; everyone else's is fine
        time.sleep(0.4)
        mode.value = 2  # now it is down for everyone: the half-open trial will fail
        time.sleep(RESET + 0.3)
        mode.value = 0  # back up: the next trial closes the circuit everywhere
        time.sleep(RESET + 0.4)
        stop.set()
        for _ in range(WORKERS):
            idx, events, invoked, trips, trace = out.get(timeout=30)
            gathered[idx] = (events, invoked, trips)
            traces[idx] = trace
    except queue.Empty as exc:
        raise AssertionError(f"workers did not report: got {sorted(gathered)}") from exc
    finally:
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join()

    events = {i: e for i, (e, _, _) in gathered.items()}
    invoked = sorted(t for _, inv, _ in gathered.values() for t in inv)
    tripped = _wait_mode_trip(events)

    # 1. every other process rejects within 50 ms of the trip (its own service is healthy)
    for i in range(1, WORKERS):
        late_ok = [t for t, what in events[i] if what == "ok" and tripped < t < tripped + 0.5]
        assert not late_ok or max(late_ok) - tripped <= 0.05, (i, max(late_ok) - tripped)
        assert any(what == "rejected" and tripped < t < tripped + RESET for t, what in events[i])

    # 2. half-open: exactly one trial call ran across all eight processes
    window = [t for t in invoked if tripped + 0.05 < t < tripped + RESET + 0.6]
    who = [
        (round(t - tripped, 4), i)
        for i, (_, inv, _) in gathered.items()
        for t in inv
        if tripped + 0.05 < t < tripped + RESET + 0.6
    ]
    if len(window) != 1 and traces.get(0):
        import redis as redis_sync

        client = redis_sync.Redis(port=redis_srv.port, decode_responses=True)
        for line in client.lrange("tracelog", 0, -1):
            who, at, what = line.split(" ", 2)
            if tripped + 0.9 < float(at) < tripped + 1.2:
                print(f"R{who} {float(at) - tripped:.4f} {what}")
        client.close()
        for i, tr in traces.items():
            for t, what in tr:
                if tripped + 0.9 < t < tripped + 1.2:
                    print(f"{i} {t - tripped:.4f} {what}")
    assert len(window) == 1, sorted(who)
    assert window[0] >= tripped + RESET - 0.05  # not before the open period ended

    # 3. recovery: the next trial succeeds and every process calls through again
    for i in range(WORKERS):
        assert events[i][-1][1] == "ok", (i, events[i][-5:])
    after = [t for t in invoked if t > tripped + RESET + 0.6]
    closing_trial = after[0]
    assert closing_trial >= tripped + 2 * RESET - 0.1
    for i in range(WORKERS):
        first_ok = min(t for t, what in events[i] if what == "ok" and t >= closing_trial)
        # by pub/sub, long before the once-a-second resync (loose: 8 processes, 2 cores)
        assert first_ok - closing_trial <= 0.25, (i, first_ok - closing_trial)

    # steady state: Redis round trips per call stay far below one
    calls = sum(len(e) for e in events.values())
    round_trips = sum(t for _, _, t in gathered.values())
    assert round_trips / calls < 0.25, (round_trips, calls)
    lags = [
        min(t for t, what in events[i] if what == "rejected" and t > tripped) - tripped
        for i in range(1, WORKERS)
    ]
    print(
        f"\nshared breaker: trip seen by all in ≤ {max(lags) * 1000:.1f} ms; "
        f"{round_trips} Redis round trips for {calls} calls ({round_trips / calls:.4f}/call)"
    )
