"""Worker processes for the cluster-wide counting tests (imported by ``spawn`` children)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any


def count_worker(
    idx: int, url: str, prefix: str, name: str, scenario: str, go: Any, results: Any
) -> None:
    """``fail``: two failures each against a shared breaker (threshold 5), then report its
    state. ``budget``: requests under a total outage through a retry with a shared budget,
    then report (requests, attempts). ``outage``: the same with the default budget settings
    (ratio 0.2, floor 10), 3 attempts, 10 requests a second for 6 s."""
    os.environ["AI_TRADER_ENV"] = "testing"
    os.environ["AI_TRADER_REDIS__URL"] = url
    os.environ["AI_TRADER_REDIS__KEY_PREFIX"] = prefix
    if scenario == "budget":
        os.environ["AI_TRADER_RESILIENCE__RETRY_BUDGET_MIN_PER_SECOND"] = "2"
    code = 1
    try:
        asyncio.run(_main(idx, name, scenario, go, results))
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
        raise
    finally:
        from resilient._backends.redis import close_workers

        close_workers()
        results.close()
        results.join_thread()
        os._exit(code)


async def _main(idx: int, name: str, scenario: str, go: Any, results: Any) -> None:
    from resilient import CircuitOpenError, breaker, breakers, retry
    from resilient._backends.shared_counts import share_budget
    from resilient._backends.shared_state import install_shared_backend

    state = install_shared_backend()
    if scenario == "fail":

        @breaker(name, shared=True, failure_threshold=5, reset_timeout=30.0)
        async def svc() -> None:
            raise ConnectionError("down")

        for _ in range(200):  # subscribed
            if state.healthy:
                break
            await asyncio.sleep(0.01)
        results.put(("ready", idx))
        await asyncio.to_thread(go.wait)
        for _ in range(2):  # the second may already be refused: the cluster tripped it
            with contextlib.suppress(ConnectionError, CircuitOpenError):
                await svc()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:  # until the cluster count opens it here too
            if breakers.get(name).state == "open":
                break
            await asyncio.sleep(0.01)
        results.put((idx, breakers.get(name).state, state.worker.round_trips))
        state.close()
        return

    import tenacity

    share_budget(name)
    attempts = {"n": 0}

    outage = scenario == "outage"

    @retry(max_attempts=3 if outage else 4, wait=tenacity.wait_none(), name=name)
    async def down() -> None:
        attempts["n"] += 1
        raise ConnectionError("down")

    results.put(("ready", idx))
    await asyncio.to_thread(go.wait)
    requests, every = 60, 0.1 if outage else 0.05  # 10 or 20 requests a second
    started = time.monotonic()
    for i in range(requests):
        with contextlib.suppress(ConnectionError):
            await down()
        await asyncio.sleep(max(0.0, started + (i + 1) * every - time.monotonic()))
    results.put((idx, requests, attempts["n"]))
    state.close()
