"""Hostile inputs beyond the first examples: other members of the same classes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from resilient.health import HealthRegistry, HealthStatus


def _stop_iteration() -> bool:
    raise StopIteration


def _system_exit() -> bool:
    raise SystemExit(3)


def _keyboard_interrupt() -> bool:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("check", "name"),
    [
        (_stop_iteration, "StopIteration"),
        (_system_exit, "SystemExit"),
        (_keyboard_interrupt, "KeyboardInterrupt"),
    ],
)
async def test_sync_check_raising_a_special_exception_is_unhealthy_at_once(
    check: Callable[[], bool], name: str
) -> None:
    """A sync check runs in a thread: what it raises there (StopIteration, which a future
    refuses; SystemExit or KeyboardInterrupt, which end only that thread) is its result,
    reported by name and at once: never a false timeout, never the host's exit."""
    reg = HealthRegistry()
    reg.register("odd", check, timeout=2.0)
    started = time.perf_counter()
    report = await reg.check_all()
    elapsed = time.perf_counter() - started
    component = report.components["odd"]
    assert component.status is HealthStatus.UNHEALTHY
    assert component.detail.startswith(name), component.detail
    assert "timed out" not in component.detail
    assert elapsed < 1.0
    # the registry keeps working
    report = await reg.check_all()
    assert report.components["odd"].status is HealthStatus.UNHEALTHY


async def test_async_check_raising_its_own_cancelled_error_is_reported() -> None:
    async def check() -> bool:
        raise asyncio.CancelledError

    reg = HealthRegistry()
    reg.register("self_cancel", check, timeout=1.0)
    report = await reg.check_all()
    assert report.components["self_cancel"].status is HealthStatus.UNHEALTHY
