"""Run a coroutine that never suspends, without an event loop.

One algorithm can then serve sync and async callers: it is written once as ``async def``
taking its blocking steps as awaitables; the async shell passes real awaitables, the sync
shell passes ones that finish at once (a plain call wrapped in ``async def``) and runs the
coroutine here.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_inline"]

T = TypeVar("T")


def run_inline(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end in this thread; it must not suspend (``RuntimeError`` if it does)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("a synchronous step suspended: it awaited something that was not ready")
