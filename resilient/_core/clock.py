"""Time sources. Monotonic time in-process; an injectable fake clock makes tests instant."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "get_clock", "set_clock", "use_clock"]


@runtime_checkable
class Clock(Protocol):
    """What the package asks of a clock."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (in-process durations)."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (only for state shared across processes)."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling coroutine for ``seconds``."""


class SystemClock:
    """The real clock."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:  # time.sleep(0) still costs tens of microseconds
            time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds if seconds > 0 else 0)


class FakeClock:
    """A clock that only moves when told to, or when something sleeps on it.

    ``sleep``/``asleep`` advance the clock instantly, so a test that covers minutes of
    simulated outage runs in milliseconds. ``asleep`` still yields to the event loop once.
    """

    __slots__ = ("_now", "_wall", "sleeps")

    def __init__(self, start: float = 1_000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._wall = float(wall)
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._wall + self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance({seconds}))")
        self._now += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self._now += seconds
        await asyncio.sleep(0)


_current: Clock = SystemClock()


def get_clock() -> Clock:
    """The clock currently in force."""
    return _current


def set_clock(clock: Clock) -> Clock:
    """Install ``clock`` for the whole process; returns the previous one."""
    global _current
    previous, _current = _current, clock
    return previous


@contextmanager
def use_clock(clock: Clock) -> Iterator[Clock]:
    """Use ``clock`` inside the block, then restore the previous clock."""
    previous = set_clock(clock)
    try:
        yield clock
    finally:
        set_clock(previous)
