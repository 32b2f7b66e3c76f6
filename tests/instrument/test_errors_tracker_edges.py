"""ErrorTracker edges: a call counter that fails counts no calls, an exception that refuses
attributes is still counted once, and the error rate of errors without counted calls."""

from __future__ import annotations

from resilient import FakeClock
from resilient.errors import ErrorTracker


class Frozen(Exception):
    """An exception that refuses new attributes."""

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(name)


def test_a_failing_call_counter_counts_no_calls() -> None:
    def broken() -> int:
        raise RuntimeError("stats unavailable")

    tracker = ErrorTracker(clock=FakeClock(), call_counter=broken)
    tracker.sample()
    assert tracker.error_rate() == 0.0
    tracker.record(ConnectionError("x"), log=False)
    assert 0.0 < tracker.error_rate() <= 1.0


def test_an_exception_refusing_attributes_is_counted_once() -> None:
    tracker = ErrorTracker(clock=FakeClock(), call_counter=lambda: 0)
    exc = Frozen("no attributes")
    first = tracker.record(exc, log=False)
    assert first is not None
    assert tracker.record(exc, log=False) is None  # remembered by identity
    assert tracker.record(Frozen("another"), log=False) is not None


def test_calls_counted_outside_breakers_lower_the_rate() -> None:
    clock = FakeClock()
    tracker = ErrorTracker(clock=clock, call_counter=lambda: 0)
    tracker.sample()
    tracker.record_calls(10)
    tracker.record(ConnectionError("one"), log=False)
    assert tracker.error_rate() == 0.1
