"""Bulkheads: a concurrency limit with a bounded queue served by priority (async and sync)."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import resilient
from resilient import BulkheadFullError, bulkhead, bulkheads
from resilient.errors import ErrorCategory, classify, is_transient, proves_not_sent


async def _gate_calls(name: str, **options: Any) -> tuple[Any, asyncio.Event, list[int]]:
    """A decorated function that holds its slot until ``gate`` is set; ``peak`` records the
    highest concurrency seen inside it."""
    gate = asyncio.Event()
    running = [0, 0]  # now, peak

    @bulkhead(name, **options)
    async def work(i: int) -> int:
        running[0] += 1
        running[1] = max(running[1], running[0])
        try:
            await gate.wait()
        finally:
            running[0] -= 1
        return i

    return work, gate, running


@settings(max_examples=40)
@given(
    limit=st.integers(1, 6),
    queue=st.integers(0, 6),
    calls=st.integers(1, 20),
)
def test_concurrency_and_queue_bounds_hold(limit: int, queue: int, calls: int) -> None:
    """Never more than max_concurrent at once; exactly the calls beyond limit + queue are
    refused (bulkhead_full), the others all complete; nothing leaks."""

    async def scenario() -> None:
        bulkheads.remove("prop")
        work, gate, running = await _gate_calls(
            "prop", max_concurrent=limit, max_queue=queue, queue_timeout=5.0
        )
        tasks = [asyncio.ensure_future(work(i)) for i in range(calls)]
        for _ in range(3):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        refused = [r for r in results if isinstance(r, BulkheadFullError)]
        assert running[1] <= limit
        assert len(refused) == max(0, calls - limit - queue)
        assert all(r.reason == "queue full" for r in refused)
        assert sorted(r for r in results if isinstance(r, int)) == sorted(
            i for i, r in enumerate(results) if not isinstance(r, BaseException)
        )
        snap = bulkheads.get("prop").snapshot()
        assert snap.active == 0 and snap.queued == 0
        assert snap.admitted == calls - len(refused)
        assert snap.rejected == len(refused)

    asyncio.run(scenario())


async def test_queue_is_served_cancel_then_order_then_read() -> None:
    """With one slot busy, queued calls start by class (cancel > order > read), FIFO within."""
    started: list[str] = []
    gate = asyncio.Event()
    hb = resilient.get_bulkhead("prio", max_concurrent=1, max_queue=10, queue_timeout=5.0)

    def make(kind: str) -> Any:
        @bulkhead("prio", priority=kind)
        async def call(tag: str) -> None:
            started.append(tag)
            if tag == "first":
                await gate.wait()

        return call

    read, order, cancel = make("read"), make("order"), make("cancel")
    tasks = [asyncio.ensure_future(read("first"))]
    await asyncio.sleep(0)
    for i in range(3):
        tasks.append(asyncio.ensure_future(read(f"read{i}")))
    tasks.append(asyncio.ensure_future(order("order")))
    tasks.append(asyncio.ensure_future(cancel("cancel")))
    await asyncio.sleep(0)
    assert hb.snapshot().queued == 5
    gate.set()
    await asyncio.gather(*tasks)
    assert started == ["first", "cancel", "order", "read0", "read1", "read2"]


async def test_without_priorities_the_queue_is_fifo() -> None:
    started: list[str] = []
    gate = asyncio.Event()
    resilient.get_bulkhead(
        "fifo", max_concurrent=1, max_queue=10, queue_timeout=5.0, priorities=False
    )

    def make(kind: str) -> Any:
        @bulkhead("fifo", priority=kind)
        async def call(tag: str) -> None:
            started.append(tag)
            if tag == "first":
                await gate.wait()

        return call

    read, order = make("read"), make("order")
    tasks = [asyncio.ensure_future(read("first"))]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(read("r1")), asyncio.ensure_future(order("o"))]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(*tasks)
    assert started == ["first", "r1", "o"]


async def test_order_displaces_the_newest_read_from_a_full_queue() -> None:
    """A full queue of reads cannot keep an order out: the newest read is refused."""
    gate = asyncio.Event()
    resilient.get_bulkhead("disp", max_concurrent=1, max_queue=2, queue_timeout=5.0)

    @bulkhead("disp", priority="read")
    async def read(tag: str) -> str:
        await gate.wait()
        return tag

    @bulkhead("disp", priority="order")
    async def order() -> str:
        return "order"

    running = asyncio.ensure_future(read("running"))
    await asyncio.sleep(0)
    old = asyncio.ensure_future(read("old"))
    new = asyncio.ensure_future(read("new"))
    await asyncio.sleep(0)
    placed = asyncio.ensure_future(order())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError) as info:
        await new
    assert info.value.reason == "displaced" and info.value.priority == "read"
    gate.set()
    assert await placed == "order"
    assert await old == "old" and await running == "running"
    # the same class cannot displace its own: a second order finds the queue full of orders
    snap = bulkheads.get("disp").snapshot()
    assert snap.rejected_by_priority == {"read": 1}


async def test_queue_timeout_refuses_with_its_own_category() -> None:
    gate = asyncio.Event()
    work, gate, _ = await _gate_calls("qt", max_concurrent=1, max_queue=5, queue_timeout=0.05)
    holder = asyncio.ensure_future(work(0))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(BulkheadFullError) as info:
        await work(1)
    assert 0.04 <= time.monotonic() - started < 1.0
    exc = info.value
    assert exc.reason == "queue timeout" and exc.name == "qt"
    assert classify(exc) is ErrorCategory.BULKHEAD_FULL
    assert ErrorCategory("bulkhead_full") is ErrorCategory.BULKHEAD_FULL
    assert not is_transient(exc)
    assert proves_not_sent(exc)
    assert "max_concurrent" in str(exc)
    snap = bulkheads.get("qt").snapshot()
    assert snap.queued == 0 and snap.active == 1
    gate.set()
    await holder
    assert bulkheads.get("qt").snapshot().active == 0


async def test_a_refused_call_is_not_retried() -> None:
    calls = 0
    gate = asyncio.Event()

    @resilient.retry(max_attempts=5, initial_delay=0, max_delay=0)
    @bulkhead("noretry", max_concurrent=1, max_queue=0)
    async def work() -> None:
        nonlocal calls
        calls += 1
        await gate.wait()

    first = asyncio.ensure_future(work())
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError):
        await work()
    gate.set()
    await first
    assert calls == 1
    assert bulkheads.get("noretry").snapshot().rejected == 1


async def test_cancelled_waiters_leave_no_slot_behind() -> None:
    """A waiter cancelled in the queue leaves it; one cancelled just after being handed a slot
    passes the slot on, so the bulkhead never shrinks."""
    work, gate, _ = await _gate_calls("cx", max_concurrent=1, max_queue=5, queue_timeout=5.0)
    holder = asyncio.ensure_future(work(0))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(work(1))
    after = asyncio.ensure_future(work(2))
    await asyncio.sleep(0)
    assert bulkheads.get("cx").snapshot().queued == 2
    waiting.cancel()
    await asyncio.sleep(0)
    assert bulkheads.get("cx").snapshot().queued == 1
    gate.set()
    assert await holder == 0 and await after == 2
    # handed a slot, then cancelled before running: the slot is passed on
    gate.clear()
    holder = asyncio.ensure_future(work(3))
    await asyncio.sleep(0)
    handed = asyncio.ensure_future(work(4))
    last = asyncio.ensure_future(work(5))
    await asyncio.sleep(0)
    bh = bulkheads.get("cx")
    gate.set()
    await asyncio.sleep(0)  # the holder returns and hands its slot to ``handed``
    assert holder.done() and bh.snapshot().queued == 1
    handed.cancel()  # before ``handed`` ran: its slot must go on to ``last``
    assert await last == 5
    with pytest.raises(asyncio.CancelledError):
        await handed
    snap = bh.snapshot()
    assert snap.active == 0 and snap.queued == 0


def test_sync_threads_respect_the_limit_and_queue_by_priority() -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}
    order: list[str] = []
    release, release_later = threading.Event(), threading.Event()
    resilient.get_bulkhead("sync", max_concurrent=2, max_queue=10, queue_timeout=5.0)

    def make(kind: str) -> Any:
        @bulkhead("sync", priority=kind)
        def call(tag: str) -> None:
            with lock:
                state["now"] += 1
                state["peak"] = max(state["peak"], state["now"])
                order.append(tag)
            (release if tag.startswith("hold") else release_later).wait(5)
            with lock:
                state["now"] -= 1

        return call

    read, cancel = make("read"), make("cancel")
    threads = [threading.Thread(target=read, args=(f"hold{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    while bulkheads.get("sync").snapshot().active < 2:
        time.sleep(0.001)
    more = [threading.Thread(target=read, args=(f"r{i}",)) for i in range(3)]
    for i, t in enumerate(more):  # one at a time: the queue order is known
        t.start()
        while bulkheads.get("sync").snapshot().queued < i + 1:
            time.sleep(0.001)
    c = threading.Thread(target=cancel, args=("cancel",))
    c.start()
    while bulkheads.get("sync").snapshot().queued < 4:
        time.sleep(0.001)
    release.set()
    while len(order) < 4:
        time.sleep(0.001)
    # the two freed slots go to the cancel and the oldest read (whose threads then race)
    assert set(order[2:4]) == {"cancel", "r0"}
    release_later.set()
    for t in [*threads, *more, c]:
        t.join(5)
    assert state["peak"] == 2
    snap = bulkheads.get("sync").snapshot()
    assert snap.active == 0 and snap.queued == 0 and snap.admitted == 6


def test_sync_queue_timeout() -> None:
    release = threading.Event()

    @bulkhead("sync-qt", max_concurrent=1, max_queue=1, queue_timeout=0.05)
    def hold() -> None:
        release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    while bulkheads.get("sync-qt").snapshot().active < 1:
        time.sleep(0.001)
    with pytest.raises(BulkheadFullError) as info:
        hold()
    assert info.value.reason == "queue timeout"
    release.set()
    t.join(5)
    assert bulkheads.get("sync-qt").snapshot().active == 0


def test_defaults_come_from_settings_and_options_are_checked() -> None:
    from resilient.config import current_config

    res = current_config().resilience
    bh = resilient.get_bulkhead("defaults")
    assert (bh.limit, bh.max_queue, bh.queue_timeout, bh.priorities) == (
        res.bulkhead_max_concurrent,
        res.bulkhead_max_queue,
        res.bulkhead_queue_timeout,
        res.bulkhead_priorities,
    )
    resilient.get_bulkhead("conflict", max_concurrent=3)
    with pytest.raises(ValueError, match="already has max_concurrent=3"):
        bulkhead("conflict", max_concurrent=4)
    with pytest.raises(ValueError, match="max_concurrent must be an integer ≥ 1"):
        bulkhead("bad", max_concurrent=0)
    with pytest.raises(ValueError, match="priority must be one of cancel, order, other, read"):
        bulkhead("badprio", priority="urgent")
    with pytest.raises(TypeError, match="unknown bulkhead option"):
        resilient.get_bulkhead("x", size=3)


async def test_reload_changes_the_limit_of_a_running_bulkhead(monkeypatch: Any) -> None:
    from resilient.config import reload_config

    monkeypatch.setenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT", "1")
    reload_config()
    work, gate, _ = await _gate_calls("reload", max_queue=10)
    try:
        tasks = [asyncio.ensure_future(work(i)) for i in range(3)]
        await asyncio.sleep(0)
        assert bulkheads.get("reload").snapshot().active == 1
        monkeypatch.setenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT", "3")
        reload_config()
        more = asyncio.ensure_future(work(9))  # the next call sees the new limit
        await asyncio.sleep(0)
        assert bulkheads.get("reload").snapshot().active == 3
        gate.set()
        await asyncio.gather(*tasks, more)
    finally:
        monkeypatch.delenv("AI_TRADER_RESILIENCE__BULKHEAD_MAX_CONCURRENT")
        reload_config()


def test_rejections_show_in_health_and_metrics() -> None:
    from resilient import metrics
    from resilient.health._sources import policy_components

    release = threading.Event()

    @bulkhead("visible", max_concurrent=1, max_queue=0, priority="read")
    def hold() -> None:
        release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    while bulkheads.get("visible").snapshot().active < 1:
        time.sleep(0.001)
    with pytest.raises(BulkheadFullError):
        hold()
    release.set()
    t.join(5)
    comp = policy_components()["visible"]
    assert comp.status.value == "degraded"
    assert comp.data["bulkhead"]["rejected"] == 1
    assert "bulkhead" in comp.detail
    snap = metrics.snapshot()["bulkheads"]["visible"]
    assert snap["rejected"] == 1 and snap["max_concurrent"] == 1
    pytest.importorskip("prometheus_client")
    text = metrics.generate_latest().decode()
    assert 'resilient_bulkhead_calls_total{kind="rejected",name="visible"} 1.0' in text
    assert 'resilient_bulkhead_max_concurrent_calls{name="visible"} 1.0' in text


async def order_latency_under_read_load(priorities: bool, orders: int = 10) -> list[float]:
    """Order latencies (s) while 100 read workers keep a 4-slot bulkhead's queue full of
    10 ms reads (also used by the bench)."""
    name = f"burst-{priorities}"
    bulkheads.remove(name)
    resilient.get_bulkhead(
        name, max_concurrent=4, max_queue=400, queue_timeout=10.0, priorities=priorities
    )
    stop = False

    @bulkhead(name, priority="read")
    async def read() -> None:
        await asyncio.sleep(0.01)

    @bulkhead(name, priority="order")
    async def order() -> None:
        await asyncio.sleep(0.001)

    async def reader() -> None:
        while not stop:
            await read()

    workers = [asyncio.ensure_future(reader()) for _ in range(100)]
    await asyncio.sleep(0.05)
    latencies = []
    for _ in range(orders):
        started = time.perf_counter()
        await order()
        latencies.append(time.perf_counter() - started)
    stop = True
    await asyncio.gather(*workers)
    return latencies


async def test_priorities_keep_order_latency_low_under_a_read_burst() -> None:
    """Reads that keep the queue full: an order waits for one read, not for the queue."""
    with_priorities = statistics.median(await order_latency_under_read_load(True))
    without = statistics.median(await order_latency_under_read_load(False))
    # FIFO: the order waits behind ~96 queued reads (96 / 4 slots × 10 ms ≈ 0.24 s)
    assert without > 0.1
    assert with_priorities < without / 5


async def test_trading_proxy_serves_cancels_then_orders_then_reads() -> None:
    """services.<name>.bulkhead puts one priority bulkhead on the proxy: with the slot busy,
    the queued cancel runs first, then the order, then the reads."""
    from dataclasses import replace

    from resilient.config import current_config
    from resilient.integration import ResilienceFactory

    started: list[str] = []
    gate = asyncio.Event()

    class Broker:
        paper = True

        async def get_bars(self, symbol: str) -> list[int]:
            started.append(f"read {symbol}")
            if symbol == "HOLD":
                await gate.wait()
            return [1]

        async def submit_order(
            self, symbol: str, qty: float, side: str, limit_price: float, client_order_id: str
        ) -> str:
            started.append("order")
            return client_order_id

        async def cancel_order(self, order_id: str) -> None:
            started.append("cancel")

    config = current_config()
    services = {"bk": {"bulkhead": 1, "rate_limit": "", "bulkhead_queue_timeout": 5.0}}
    factory = ResilienceFactory(replace(config, extra={**config.extra, "services": services}))
    broker = factory.create_resilient_broker(Broker(), "bk")
    hold = asyncio.ensure_future(broker.get_bars("HOLD"))
    await asyncio.sleep(0.01)
    reads = [asyncio.ensure_future(broker.get_bars(s)) for s in ("A", "B")]
    await asyncio.sleep(0.01)
    order = asyncio.ensure_future(broker.submit_order("AAPL", 1, "buy", 10.0, "cid-1"))
    await asyncio.sleep(0.01)
    cancel = asyncio.ensure_future(broker.cancel_order("o-1"))
    await asyncio.sleep(0.01)
    assert bulkheads.get("bk").snapshot().queued == 4
    gate.set()
    await asyncio.gather(hold, *reads, order, cancel)
    assert started == ["read HOLD", "cancel", "order", "read A", "read B"]
    health = await factory.service("bk")._health()
    assert health["bulkhead"]["max_concurrent"] == 1
    assert health["bulkhead"]["admitted"] == 5 and health["bulkhead"]["queued_total"] == 4
    await factory.shutdown()


def test_threads_hammering_never_exceed_the_limit_and_leak_nothing() -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0, "done": 0}

    @bulkhead("hammer", max_concurrent=3, max_queue=100, queue_timeout=10.0)
    def work() -> None:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0)
        with lock:
            state["now"] -= 1
            state["done"] += 1

    def loop() -> None:
        for _ in range(300):
            work()

    threads = [threading.Thread(target=loop) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    snap = bulkheads.get("hammer").snapshot()
    assert state["done"] == 2400 and state["peak"] <= 3
    assert snap.active == 0 and snap.queued == 0 and snap.rejected == 0
