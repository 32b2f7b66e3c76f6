"""StreamSupervisor with in-process sources: live subscription changes, callbacks that fail
(on_message, on_gap, the subscription senders), sources that are not iterable, and the
idempotent start and stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from _stream_support import eventually

from resilient.health import HealthRegistry
from resilient.streams import Gap, StreamSupervisor


class _Conn:
    """An async iterator of messages put on a queue; ``close()`` ends it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        item = await self.queue.get()
        if item is StopAsyncIteration:
            raise StopAsyncIteration
        return item

    async def close(self) -> None:
        self.closed = True


async def test_live_subscription_changes_are_sent_and_their_failures_swallowed() -> None:
    conns: list[_Conn] = []
    subscribed: list[tuple[str, ...]] = []
    unsubscribed: list[tuple[str, ...]] = []
    fail_next = {"sub": False}

    def connect() -> _Conn:
        conns.append(_Conn())
        return conns[-1]

    def subscribe(conn: Any, items: tuple[str, ...]) -> None:
        if fail_next["sub"]:
            raise ConnectionError("socket closing")
        subscribed.append(items)

    async def unsubscribe(conn: Any, items: tuple[str, ...]) -> None:
        unsubscribed.append(items)

    got: list[Any] = []
    sup = StreamSupervisor(
        "live-subs",
        connect,
        on_message=got.append,
        subscribe=subscribe,
        unsubscribe=unsubscribe,
        subscriptions=["AAPL"],
        registry=HealthRegistry(),
        initial_delay=0.01,
        max_delay=0.02,
    )
    await sup.subscribe("MSFT")  # not connected yet: remembered, not sent
    assert subscribed == []
    async with sup:
        await eventually(lambda: sup.connected, what="connected")
        assert subscribed == [("AAPL", "MSFT")]
        await sup.subscribe("MSFT", "TSLA")  # only the new one is sent
        assert subscribed[-1] == ("TSLA",)
        await sup.unsubscribe("AAPL", "NOPE")
        assert unsubscribed == [("AAPL",)]
        assert sup.subscriptions == ("MSFT", "TSLA")
        fail_next["sub"] = True
        await sup.subscribe("NVDA")  # the failure is logged, not raised
        assert "NVDA" in sup.subscriptions
        conns[-1].queue.put_nowait({"p": 1})
        await eventually(lambda: got == [{"p": 1}], what="a message")
        assert "live-subs" in repr(sup) and "connected" in repr(sup)
    assert conns[0].closed
    assert not sup.running


async def test_failing_message_handler_and_gap_callback_do_not_stop_the_stream() -> None:
    conns: list[_Conn] = []
    gaps: list[Gap] = []

    def connect() -> _Conn:
        conns.append(_Conn())
        return conns[-1]

    def on_message(message: Any) -> None:
        if message == "bad":
            raise ValueError("cannot parse")

    def on_gap(gap: Gap) -> None:
        gaps.append(gap)
        raise RuntimeError("backfill failed")

    sup = StreamSupervisor(
        "flaky-handlers",
        connect,
        on_message=on_message,
        on_gap=on_gap,
        registry=HealthRegistry(),
        initial_delay=0.01,
        max_delay=0.02,
    )
    async with sup:
        await eventually(lambda: len(conns) == 1 and sup.connected, what="first connection")
        for message in ("ok", "bad", "bad", "ok"):
            conns[0].queue.put_nowait(message)
        await eventually(lambda: sup.messages == 4, what="four messages")
        assert sup.handler_errors == 2
        conns[0].queue.put_nowait(StopAsyncIteration)  # the server ends the stream
        await eventually(lambda: len(conns) == 2 and sup.connected, what="reconnection")
        conns[1].queue.put_nowait("ok")
        await eventually(lambda: sup.gaps == 1, what="the gap")
    assert len(gaps) == 1 and gaps[0].stream == "flaky-handlers"
    assert gaps[0].end >= gaps[0].start
    assert sup.last_gap is gaps[0]


async def test_a_source_that_is_not_iterable_is_an_error_and_retried() -> None:
    attempts = 0

    def connect() -> object:
        nonlocal attempts
        attempts += 1
        return object()

    registry = HealthRegistry()
    sup = StreamSupervisor(
        "not-iterable",
        connect,
        on_message=print,
        registry=registry,
        initial_delay=0.01,
        max_delay=0.02,
        failure_threshold=100,
    )
    task = sup.start()
    assert sup.start() is task  # idempotent
    try:
        await eventually(lambda: attempts >= 3, what="three attempts")
        assert sup.reconnects.get("error", 0) >= 2
        assert sup.messages == 0
        assert sup.component in registry.names()
    finally:
        await sup.stop()
        await sup.stop()  # idempotent
    assert sup.component not in registry.names()


class _StuckConn(_Conn):
    """A connection whose close hangs up: its transport is aborted instead."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.transport = self

    def abort(self) -> None:
        self.aborted = True

    async def close(self) -> None:
        raise OSError("close failed")


async def test_a_connection_that_cannot_close_is_aborted() -> None:
    conns: list[_StuckConn] = []

    def connect() -> _StuckConn:
        conns.append(_StuckConn())
        return conns[-1]

    sup = StreamSupervisor(
        "stuck-close",
        connect,
        on_message=print,
        registry=HealthRegistry(),
        initial_delay=0.01,
        max_delay=0.02,
    )
    async with sup:
        await eventually(lambda: sup.connected, what="connected")
    assert conns[0].aborted


async def test_a_failing_subscribe_at_connect_closes_that_connection_and_retries() -> None:
    conns: list[_Conn] = []
    failures = {"left": 1}

    def connect() -> _Conn:
        conns.append(_Conn())
        return conns[-1]

    def subscribe(conn: Any, items: tuple[str, ...]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise ConnectionError("subscribe refused")

    sup = StreamSupervisor(
        "sub-fails",
        connect,
        on_message=print,
        subscribe=subscribe,
        subscriptions=["AAPL"],
        registry=HealthRegistry(),
        initial_delay=0.01,
        max_delay=0.02,
    )
    async with sup:
        await eventually(lambda: len(conns) >= 2 and sup.connected, what="second connection")
    assert conns[0].closed
