"""Ambient deadlines: ``with resilient.deadline(2.0):`` bounds every retry and timeout inside.

The deadline is an absolute time on the current clock's monotonic scale, kept in a context
variable so it follows the call into tasks and threads started from it. Nested deadlines never
extend an outer one. Nothing reads it on the success path of a retry; timeouts read it once per
call (a context-variable get, no set).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta

from resilient._core import clock as _clock

__all__ = ["deadline", "remaining", "seconds_of"]

_deadline: ContextVar[float | None] = ContextVar("resilient_deadline", default=None)


def seconds_of(value: float | timedelta, what: str) -> float:
    """``value`` in seconds; a clear error for negative or non-numeric durations."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int beyond float range: the bounds checks refuse inf
            seconds = math.inf if value > 0 else -math.inf
    else:
        raise TypeError(f"{what} must be seconds (a number) or a timedelta, got {value!r}")
    if not seconds >= 0:
        raise ValueError(f"{what} must be ≥ 0 seconds, got {seconds!r}")
    return seconds


@contextmanager
def deadline(seconds: float | timedelta) -> Iterator[float]:
    """Run the block under a deadline ``seconds`` from now (never later than an outer one).

    Retries start no wait that cannot finish before it and give up with the original error;
    timeouts inside are shortened to it. Yields the absolute deadline (monotonic seconds).
    """
    at = _clock._current.monotonic() + seconds_of(seconds, "deadline")
    outer = _deadline.get()
    if outer is not None and outer < at:
        at = outer
    token = _deadline.set(at)
    try:
        yield at
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left before the ambient deadline (may be ≤ 0), or ``None`` without one."""
    at = _deadline.get()
    if at is None:
        return None
    return at - _clock._current.monotonic()
