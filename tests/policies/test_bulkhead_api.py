"""The Bulkhead object used directly (acquire/release, sync and async), its option checks,
the registry's errors and the health component of a refusal."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from resilient import BulkheadFullError, bulkhead, bulkheads, get_bulkhead
from resilient.config import reload_config
from resilient.health import HealthStatus, registry


def test_try_enter_and_release() -> None:
    bh = get_bulkhead("api-te", max_concurrent=2, max_queue=0)
    assert bh.try_enter() and bh.try_enter()
    assert not bh.try_enter()
    assert bh.active == 2
    assert "api-te" in repr(bh) and "2/2" in repr(bh)
    bh.release()
    assert bh.active == 1
    bh.release()
    assert bh.snapshot().admitted == 2


async def test_async_acquire_waits_for_a_released_slot() -> None:
    bh = get_bulkhead("api-async", max_concurrent=1, max_queue=2, queue_timeout=5.0)
    await bh.acquire()
    waiter = asyncio.ensure_future(bh.acquire("read"))
    await asyncio.sleep(0.01)
    assert not waiter.done() and bh.queued == 1
    bh.release()
    await asyncio.wait_for(waiter, 2.0)
    assert bh.active == 1 and bh.queued == 0
    bh.release()
    assert bh.snapshot().queued_total == 1


async def test_async_acquire_times_out_in_the_queue() -> None:
    bh = get_bulkhead("api-timeout", max_concurrent=1, max_queue=1, queue_timeout=0.05)
    await bh.acquire()
    try:
        with pytest.raises(BulkheadFullError) as info:
            await bh.acquire("order")
        assert bh.queued == 0
    finally:
        bh.release()
    snap = bh.snapshot()
    assert snap.rejected == 1 and snap.rejected_by_priority == {"order": 1}
    assert "queue timeout" in str(info.value)


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    bh = get_bulkhead("api-cancel", max_concurrent=1, max_queue=1, queue_timeout=5.0)
    await bh.acquire()
    waiter = asyncio.ensure_future(bh.acquire())
    await asyncio.sleep(0.01)
    assert bh.queued == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert bh.queued == 0
    bh.release()
    assert bh.active == 0


def test_sync_acquire_is_woken_by_a_release_from_another_thread() -> None:
    bh = get_bulkhead("api-sync", max_concurrent=1, max_queue=1, queue_timeout=5.0)
    bh.acquire_sync()
    threading.Timer(0.05, bh.release).start()
    started = time.monotonic()
    bh.acquire_sync("cancel")
    assert time.monotonic() - started < 4.0
    assert bh.active == 1
    bh.release()


def test_sync_acquire_times_out() -> None:
    bh = get_bulkhead("api-sync-to", max_concurrent=1, max_queue=1, queue_timeout=0.05)
    bh.acquire_sync()
    try:
        with pytest.raises(BulkheadFullError):
            bh.acquire_sync()
    finally:
        bh.release()
    assert bh.queued == 0


async def test_a_higher_class_displaces_the_newest_lower_one() -> None:
    bh = get_bulkhead("api-displace", max_concurrent=1, max_queue=1, queue_timeout=5.0)
    await bh.acquire()
    low = asyncio.ensure_future(bh.acquire("read"))
    await asyncio.sleep(0.01)
    high = asyncio.ensure_future(bh.acquire("cancel"))
    with pytest.raises(BulkheadFullError) as info:
        await asyncio.wait_for(low, 2.0)
    assert "displaced" in str(info.value)
    bh.release()
    await asyncio.wait_for(high, 2.0)
    bh.release()


async def test_without_priorities_a_full_queue_refuses() -> None:
    bh = get_bulkhead(
        "api-nopri", max_concurrent=1, max_queue=1, queue_timeout=5.0, priorities=False
    )
    await bh.acquire()
    low = asyncio.ensure_future(bh.acquire("read"))
    await asyncio.sleep(0.01)
    with pytest.raises(BulkheadFullError):
        await bh.acquire("cancel")
    bh.release()
    await asyncio.wait_for(low, 2.0)
    bh.release()


def test_no_queue_refuses_at_once() -> None:
    bh = get_bulkhead("api-noq", max_concurrent=1, queue_timeout=0)
    bh.acquire_sync()
    try:
        with pytest.raises(BulkheadFullError):
            bh.acquire_sync()
    finally:
        bh.release()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_concurrent": 0}, ValueError, "max_concurrent must be an integer ≥ 1"),
        ({"max_queue": -1}, ValueError, "max_queue must be an integer ≥ 0"),
        ({"max_concurrent": True}, ValueError, "max_concurrent must be an integer"),
        ({"priorities": "yes"}, TypeError, "priorities must be true or false"),
        ({"burst": 3}, TypeError, "unknown bulkhead option"),
    ],
)
def test_option_errors(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        get_bulkhead("api-bad", **options)  # type: ignore[arg-type]
    assert "api-bad" not in bulkheads


@pytest.mark.parametrize("priority", ["urgent", 9, -1, True])
async def test_unknown_priority(priority: object) -> None:
    bh = get_bulkhead("api-prio", max_concurrent=1, max_queue=1, queue_timeout=0.01)
    await bh.acquire()
    try:
        with pytest.raises(ValueError, match="bulkhead priority must be one of"):
            await bh.acquire(priority)  # type: ignore[arg-type]
    finally:
        bh.release()


def test_registry_lookup_errors_and_removal() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        get_bulkhead("")
    with pytest.raises(KeyError, match=r"no bulkhead named 'ghost'"):
        bulkheads.get("ghost")
    bh = get_bulkhead("api-reg", max_concurrent=3)
    assert bulkheads.get("api-reg") is bh
    assert get_bulkhead("api-reg") is bh
    assert "api-reg" in bulkheads.names() and len(bulkheads) >= 1
    bulkheads.remove("api-reg")
    assert "api-reg" not in bulkheads


async def test_a_recent_refusal_degrades_the_health_component() -> None:
    bh = get_bulkhead("api-health", max_concurrent=1, max_queue=0)
    await bh.acquire()
    try:
        with pytest.raises(BulkheadFullError):
            await bh.acquire()
    finally:
        bh.release()
    report = await registry.check_all()  # the package's registry reads every bulkhead
    component = report.components["api-health"]
    assert component.status is HealthStatus.DEGRADED
    assert "bulkhead refused 1 call(s)" in component.detail
    assert component.data["bulkhead"]["rejected"] == 1


def test_conflicting_options_for_one_name_are_refused() -> None:
    get_bulkhead("api-conflict", max_concurrent=2)
    assert get_bulkhead("api-conflict", max_concurrent=2).limit == 2  # the same value is fine
    with pytest.raises(ValueError, match="already has max_concurrent=2"):
        get_bulkhead("api-conflict", max_concurrent=3)


def test_the_configured_limit_follows_reloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT", "2")
    reload_config()
    try:
        bh = get_bulkhead("api-reload")
        assert bh.try_enter() and bh.try_enter()
        monkeypatch.setenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT", "1")
        reload_config()
        assert not bh.try_enter()  # lowered while both slots are held
        assert bh.limit == 1
        bh.release()  # retired: the limit is now 1
        assert not bh.try_enter()
        bh.release()
        assert bh.try_enter()
        monkeypatch.setenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT", "3")
        reload_config()
        assert bh.try_enter() and bh.try_enter()
        assert not bh.try_enter()
        assert bh.active == 3
        for _ in range(3):
            bh.release()
    finally:
        monkeypatch.delenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT")
        reload_config()


def test_int_priorities_are_classes() -> None:
    bh = get_bulkhead("api-int", max_concurrent=1, max_queue=0)
    bh.acquire_sync(0)
    try:
        with pytest.raises(BulkheadFullError) as info:
            bh.acquire_sync(3)
        assert "read" in str(info.value)
    finally:
        bh.release()


def test_decorated_sync_calls_queue_across_threads() -> None:
    running: list[int] = []
    peak = 0
    lock = threading.Lock()

    @bulkhead("api-deco", max_concurrent=1, max_queue=4, queue_timeout=5.0)
    def work(i: int) -> int:
        nonlocal peak
        with lock:
            running.append(i)
            peak = max(peak, len(running))
        time.sleep(0.02)
        with lock:
            running.remove(i)
        return i

    results: list[int] = []
    threads = [threading.Thread(target=lambda i=i: results.append(work(i))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [0, 1, 2, 3]
    assert peak == 1
    assert bulkheads.get("api-deco").snapshot().queued_total >= 1


async def test_decorated_async_calls_queue() -> None:
    active = 0
    peak = 0

    @bulkhead("api-adeco", max_concurrent=2, max_queue=4, queue_timeout=5.0, priority="order")
    async def work(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return i

    assert sorted(await asyncio.gather(*(work(i) for i in range(5)))) == [0, 1, 2, 3, 4]
    assert peak == 2


async def test_a_release_from_another_thread_wakes_an_async_waiter() -> None:
    bh = get_bulkhead("api-xthread", max_concurrent=1, max_queue=1, queue_timeout=5.0)
    bh.acquire_sync()
    waiter = asyncio.ensure_future(bh.acquire())
    await asyncio.sleep(0.01)
    await asyncio.to_thread(bh.release)
    await asyncio.wait_for(waiter, 2.0)
    assert bh.active == 1
    bh.release()
