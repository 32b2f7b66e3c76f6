"""Sliding windows for the failure-rate and slow-call-rate trip rules (as in Resilience4j).

A count-based window remembers the outcome of the last ``size`` calls; a time-based window
aggregates the calls of the last ``size`` seconds in one bucket per second. Both keep running
totals, so recording an outcome and reading the rates is O(1) (O(size) for an expired sweep of
the time window, at most once per second).
"""

from __future__ import annotations

import math

__all__ = ["CountWindow", "TimeWindow", "Window"]


class CountWindow:
    """The last ``size`` outcomes."""

    __slots__ = ("_fails", "_n", "_pos", "_ring", "_slow", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"window_size must be ≥ 1 call, got {size}")
        self.size = size
        self._ring = bytearray(size)
        self.reset()

    def reset(self) -> None:
        """Forget every outcome."""
        self._ring[:] = bytes(self.size)
        self._pos = self._n = self._fails = self._slow = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one outcome (``now`` is unused: the window counts calls, not seconds)."""
        code = int(failed) | (int(slow) << 1)
        pos = self._pos
        if self._n == self.size:
            old = self._ring[pos]
            self._fails -= old & 1
            self._slow -= old >> 1
        else:
            self._n += 1
        self._ring[pos] = code
        self._pos = (pos + 1) % self.size
        self._fails += code & 1
        self._slow += code >> 1

    def counts(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow calls)`` in the window."""
        return self._n, self._fails, self._slow


class TimeWindow:
    """The outcomes of the last ``size`` seconds, one bucket per second."""

    __slots__ = ("_calls", "_epochs", "_fails", "_slow", "size")

    def __init__(self, size: float) -> None:
        seconds = math.ceil(size)
        if seconds < 1:
            raise ValueError(f"a time window needs window_size ≥ 1 second, got {size}")
        self.size = seconds
        self._epochs = [-1] * seconds
        self._calls = [0] * seconds
        self._fails = [0] * seconds
        self._slow = [0] * seconds

    def reset(self) -> None:
        """Forget every outcome."""
        for i in range(self.size):
            self._epochs[i] = -1
            self._calls[i] = self._fails[i] = self._slow[i] = 0

    def record(self, failed: bool, slow: bool, now: float) -> None:
        """Add one outcome at monotonic time ``now``."""
        second = int(now)
        i = second % self.size
        if self._epochs[i] != second:
            self._epochs[i] = second
            self._calls[i] = self._fails[i] = self._slow[i] = 0
        self._calls[i] += 1
        self._fails[i] += failed
        self._slow[i] += slow

    def counts(self, now: float) -> tuple[int, int, int]:
        """``(calls, failures, slow calls)`` in the last ``size`` seconds."""
        oldest = int(now) - self.size
        calls = fails = slow = 0
        for i, epoch in enumerate(self._epochs):
            if epoch > oldest:
                calls += self._calls[i]
                fails += self._fails[i]
                slow += self._slow[i]
        return calls, fails, slow


Window = CountWindow | TimeWindow
