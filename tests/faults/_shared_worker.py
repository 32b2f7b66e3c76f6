"""A worker process for the shared-breaker fault test (imported by ``spawn`` children).

With ``RESILIENT_TRACE=1`` each worker also records its breaker transitions, permit answers
and delivered records, and the Lua scripts log to the Redis list ``tracelog``; the test prints
both around the half-open window when it fails.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

RESET = 1.0  # reset_timeout of the shared breaker
PERIOD = 0.005  # one call every 5 ms per process


def run_worker(
    idx: int, url: str, prefix: str, name: str, mode: Any, stop: Any, ready: Any, results: Any
) -> None:
    """mode 0: every call succeeds; 1: only worker 0's calls fail; 2: every call fails."""
    os.environ["AI_TRADER_ENV"] = "testing"
    os.environ["AI_TRADER_REDIS__URL"] = url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    code = 1
    try:
        asyncio.run(_main(idx, name, mode, stop, ready, results))
        code = 0
    finally:
        from resilient._backends.redis import close_workers

        close_workers()
        for q in (ready, results):
            q.close()
            q.join_thread()  # the parent has read what matters; flush and leave at once
        os._exit(code)


async def _main(idx: int, name: str, mode: Any, stop: Any, ready: Any, results: Any) -> None:
    from resilient import CircuitOpenError, breaker
    from resilient._backends.shared_state import install_shared_backend

    if os.environ.get("RESILIENT_TRACE"):
        from resilient._backends import shared_state as _shared_state

        tag = "local t = redis.call('TIME') local log = '{0} ' .. t[1] .. '.' .. t[2] "
        _shared_state._ACQUIRE = _shared_state._ACQUIRE.replace(
            "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])",
            "redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3]) "
            + tag.format(idx)
            + " redis.call('RPUSH', 'tracelog', log .. ' grant ' .. ARGV[3])",
        )
        _shared_state._RELEASE = (
            tag.format(idx)
            + " redis.call('RPUSH', 'tracelog', log .. ' release') "
            + _shared_state._RELEASE
        )
        _shared_state._PUBLISH = (
            tag.format(idx) + " redis.call('RPUSH', 'tracelog', log .. ' publish ' .. ARGV[1] "
            ".. ' v' .. ARGV[3]) " + _shared_state._PUBLISH
        )
    state = install_shared_backend()
    invoked: list[float] = []
    trace: list[tuple[float, str]] = []
    if os.environ.get("RESILIENT_TRACE"):
        from resilient._core import events as _hooks

        def hook(event: Any) -> None:
            if event.kind == _hooks.EventKind.BREAKER_STATE:
                trace.append((time.time(), f"{event.old_state}->{event.new_state}"))

        _hooks.add_hook(hook)
        real_acquire = state.acquire_permit
        real_deliver = state._deliver

        async def acquire(*a: Any) -> Any:
            t = time.time()
            got = await real_acquire(*a)
            trace.append((t, f"acquire={got}"))
            return got

        def deliver(name: str, record: Any, force: bool = False) -> None:
            trace.append((time.time(), f"deliver {record.state} v{record.version} f={force}"))
            real_deliver(name, record, force=force)

        state.acquire_permit = acquire  # type: ignore[method-assign]
        state._deliver = deliver  # type: ignore[method-assign]

    @breaker(name, shared=True, failure_threshold=2, reset_timeout=RESET, half_open_max_calls=1)
    async def svc() -> str:
        invoked.append(time.time())
        m = mode.value
        if m == 2 or (m == 1 and idx == 0):
            raise ConnectionError("service down")
        return "ok"

    await svc()
    for _ in range(2000):  # until subscribed to the shared state (≤ 10 s)
        if state.healthy:
            break
        await asyncio.sleep(0.005)
    invoked.clear()
    ready.put(idx)
    events: list[tuple[float, str]] = []
    while not stop.is_set():
        started = time.time()
        try:
            await svc()
            events.append((started, "ok"))
        except CircuitOpenError:
            events.append((started, "rejected"))
        except ConnectionError:
            events.append((started, "fail"))
        await asyncio.sleep(PERIOD)
    results.put((idx, events, invoked, state.worker.round_trips, trace))
    state.close()
