"""@timeout: async calls cancelled, sync waits bounded, deadlines honoured, fake clock."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import resilient
from resilient import FakeClock, deadline, get_clock, timeout, use_clock


async def test_async_call_is_cancelled_and_raises() -> None:
    """An async call over its limit is cancelled and raises resilient.TimeoutError."""
    cancelled = asyncio.Event()

    @timeout(0.02)
    async def slow() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    with pytest.raises(resilient.TimeoutError) as info:
        await slow()
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, resilient.ResilientError)
    assert info.value.seconds == pytest.approx(0.02)
    assert cancelled.is_set()


async def test_async_call_within_limit_returns() -> None:
    """A call that finishes in time returns its value."""

    @timeout(1.0)
    async def quick(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    assert await quick(1) == 2


async def test_async_functions_own_timeout_error_passes_through() -> None:
    """A TimeoutError raised by the function itself is not mistaken for the limit."""
    own = TimeoutError("upstream said so")

    @timeout(5.0)
    async def fails() -> None:
        raise own

    with pytest.raises(TimeoutError) as info:
        await fails()
    assert info.value is own


def test_sync_wait_is_bounded() -> None:
    """A sync call over its limit: the caller gets resilient.TimeoutError on time."""
    release = threading.Event()

    @timeout(0.05)
    def blocking() -> str:
        release.wait(5)
        return "late"

    start = time.monotonic()
    with pytest.raises(resilient.TimeoutError):
        blocking()
    assert time.monotonic() - start < 1.0
    release.set()


def test_sync_call_returns_result_and_errors() -> None:
    """In time, a sync call returns its value or raises its own error, and sees the
    caller's context variables."""
    with resilient.correlation_id("cid-1"):

        @timeout(2.0)
        def work(x: int) -> str:
            from resilient.errors import current_correlation_id

            if x < 0:
                raise ValueError("negative")
            return f"{x}:{current_correlation_id()}"

        assert work(3) == "3:cid-1"
        with pytest.raises(ValueError, match="negative"):
            work(-1)


async def test_fake_clock_timeout_async() -> None:
    """Under a fake clock the limit is measured on it: no real waiting."""
    clock = FakeClock()

    @timeout(5)
    async def slow() -> str:
        await get_clock().asleep(60)
        return "late"

    with use_clock(clock):
        start = time.monotonic()
        with pytest.raises(resilient.TimeoutError):
            await slow()
    assert time.monotonic() - start < 1.0


def test_fake_clock_timeout_sync() -> None:
    """The same for a sync function: the fake clock passing the limit ends the wait."""
    clock = FakeClock()
    release = threading.Event()

    @timeout(5)
    def slow() -> str:
        clock.advance(10)
        release.wait(5)
        return "late"

    with use_clock(clock), pytest.raises(resilient.TimeoutError):
        slow()
    release.set()


async def test_deadline_shortens_the_limit() -> None:
    """An ambient deadline shorter than the timeout wins; an expired one fails at once."""
    calls = 0

    @timeout(10)
    async def slow() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(10)

    with deadline(0.02), pytest.raises(resilient.TimeoutError) as info:
        await slow()
    assert info.value.seconds <= 0.02
    with deadline(0), pytest.raises(resilient.TimeoutError):
        await slow()
    assert calls == 1


@pytest.mark.parametrize("bad", [0, -1, "1s"])
def test_invalid_limit_fails_at_decoration(bad: object) -> None:
    """A zero, negative or non-numeric limit is refused with a clear error."""
    with pytest.raises((ValueError, TypeError), match="timeout"):
        timeout(bad)  # type: ignore[arg-type]


async def test_task_keeps_working_after_a_timeout() -> None:
    """After a timeout the caller's task is not left cancelled: it can await again."""

    @timeout(0.01)
    async def slow() -> None:
        await asyncio.sleep(10)

    with pytest.raises(resilient.TimeoutError):
        await slow()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.001)


async def test_swallowed_cancellation_returns_the_result() -> None:
    """A function that absorbs the cancellation and returns: its value, task not cancelled."""

    @timeout(0.01)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            return "cleaned up"
        return "late"

    assert await stubborn() == "cleaned up"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0.001)


async def test_outer_cancellation_is_not_a_timeout() -> None:
    """Cancelling the caller's task propagates CancelledError, not a timeout."""
    started = asyncio.Event()

    @timeout(5)
    async def waits() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(waits())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_fake_clock_sync_functions_own_timeout_error_passes_through() -> None:
    """Under a fake clock, a sync function's own TimeoutError is re-raised promptly (it is
    not taken for the polling's timeout, which would wait on the fake clock forever)."""
    clock = FakeClock()
    own = TimeoutError("inner")

    @timeout(5)
    def fails() -> None:
        raise own

    caught: list[BaseException] = []

    def run() -> None:
        try:
            fails()
        except TimeoutError as exc:
            caught.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    with use_clock(clock):
        start = time.monotonic()
        worker.start()
        worker.join(5)
    assert not worker.is_alive(), "the call kept polling the fake clock"
    assert time.monotonic() - start < 1.0
    assert caught == [own]
    assert caught[0] is own
