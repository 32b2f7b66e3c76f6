"""Timeouts at their edges: an async function that swallows its cancellation returns what it
returned (the task is not left cancelled), and a sync call under a spent deadline never
starts."""

from __future__ import annotations

import asyncio
import time

import pytest

from resilient import TimeoutError as ResilientTimeout
from resilient import deadline, timeout


async def test_a_swallowed_cancellation_returns_the_functions_answer() -> None:
    @timeout(0.05)
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "swallowed"
        return "finished"

    assert await stubborn() == "swallowed"
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    await asyncio.sleep(0)  # this task was not left cancelled


def test_a_sync_call_under_a_spent_deadline_never_starts() -> None:
    started: list[bool] = []

    @timeout(1.0)
    def work() -> int:
        started.append(True)
        return 1

    with deadline(0.01):
        time.sleep(0.02)
        with pytest.raises(ResilientTimeout, match=r"timed out after 0\.000s"):
            work()
    assert started == []
    assert work() == 1
