"""Time control: breakers, retries, timeouts, health monitor and alerts follow the fake clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from itertools import pairwise

import pytest

import resilient
from resilient import FakeClock
from resilient.health import AlertManager, AlertRule, HealthRegistry
from resilient.testing import Fault, FlakyService, Hang, Latency, use_fake_clock


def test_use_fake_clock_installs_and_restores() -> None:
    """The context manager installs a fresh fake clock and puts the previous one back."""
    before = resilient.get_clock()
    with use_fake_clock(start=5.0) as clock:
        assert resilient.get_clock() is clock
        assert clock.monotonic() == 5.0
    assert resilient.get_clock() is before


def test_breaker_reset_timeout_runs_on_the_fake_clock(
    fake_clock: FakeClock, isolated_registry: None
) -> None:
    """An open circuit stays open for exactly its reset timeout of simulated time."""
    service = FlakyService([Fault("connection_refused")])
    call = resilient.breaker("clocked", failure_threshold=1, reset_timeout=60.0)(
        service.wrap(lambda: "ok")
    )
    with pytest.raises(ConnectionRefusedError):
        call()
    fake_clock.advance(59.9)
    with pytest.raises(resilient.CircuitOpenError) as info:
        call()
    assert info.value.retry_after == pytest.approx(0.1)
    fake_clock.advance(0.1)
    assert call() == "ok"


async def test_retry_sleeps_on_the_fake_clock(fake_clock: FakeClock) -> None:
    """Backoff waits are taken on the fake clock: recorded, never really slept."""
    service = FlakyService([Fault("timeout")] * 3)

    async def fetch() -> str:
        return "ok"

    call = resilient.retry(
        max_attempts=4, initial_delay=10.0, max_delay=60.0, jitter=False, budget=False
    )(service.wrap(fetch))
    started = time.monotonic()
    assert await call() == "ok"
    assert fake_clock.sleeps == [10.0, 20.0, 40.0]  # exponential: 10 × 2ⁿ
    assert time.monotonic() - started < 1.0


async def test_timeout_expires_on_the_fake_clock(fake_clock: FakeClock) -> None:
    """A simulated hang of an hour hits a 5 s timeout at once; a 2 s latency does not."""
    hang = FlakyService([Hang(3600.0)])
    slow = FlakyService([Latency(2.0)], value="quote")
    guarded_hang = resilient.timeout(5.0)(hang.acall)
    guarded_slow = resilient.timeout(5.0)(slow.acall)
    started = time.monotonic()
    with pytest.raises(resilient.TimeoutError):
        await guarded_hang()
    assert await guarded_slow() == "quote"
    assert time.monotonic() - started < 1.0


async def test_health_monitor_runs_on_the_fake_clock(fake_clock: FakeClock) -> None:
    """The monitor sleeps its interval on the fake clock; report times are an interval apart."""
    registry = HealthRegistry()

    async def database() -> bool:
        return True

    registry.register("database", database)
    times: list[str] = []
    registry.on_report(lambda report: times.append(report.timestamp))
    registry.start_monitor(interval=30.0)
    for _ in range(2000):
        if len(times) >= 3:
            break
        await asyncio.sleep(0.001)
    await registry.stop_monitor()
    assert not registry.monitoring
    stamps = [dt.datetime.fromisoformat(t) for t in times[:3]]
    assert [(b - a).total_seconds() for a, b in pairwise(stamps)] == [
        30.0,
        30.0,
    ]
    assert fake_clock.sleeps[:2] == [30.0, 30.0]


def test_alert_delay_is_measured_on_the_fake_clock(fake_clock: FakeClock) -> None:
    """A rule notified after 5 minutes fires after 300 s of simulated time, then resolves."""
    rule = AlertRule.parse(
        "broker_down",
        {
            "condition": 'circuit_breaker_state == "open"',
            "severity": "critical",
            "notification": "5 minutes",
        },
    )
    alerts = AlertManager([rule])
    values = {"circuit_breaker_state": {"broker": "open"}}
    assert alerts.evaluate(values) == []
    fake_clock.advance(299.0)
    assert alerts.evaluate(values) == []
    fake_clock.advance(1.0)
    [fired] = alerts.evaluate(values)
    assert (fired.state, fired.subject) == ("firing", "broker")
    [resolved] = alerts.evaluate({"circuit_breaker_state": {"broker": "closed"}})
    assert resolved.state == "resolved"
