"""Invariant checks: they pass on good records and fail with a message naming the bad call."""

from __future__ import annotations

import contextlib

import pytest

from resilient import FakeClock
from resilient.testing import (
    Call,
    Fault,
    FlakyService,
    Latency,
    Outcome,
    RateLimited,
    Success,
    assert_fallback_iff_failed,
    assert_no_call_while_open,
    assert_no_duplicate_orders,
    assert_within_policy,
)


def _play(service: FlakyService, clock: FakeClock, waits: list[float]) -> list[Call]:
    """Call the service once per wait, sleeping ``wait`` on the clock before each call."""
    for wait in waits:
        clock.advance(wait)
        with contextlib.suppress(Exception):
            service.call()
    return service.calls


def _service(*outcomes: Outcome, observed: list[str] | None = None) -> FlakyService:
    states = iter(observed or [])
    return FlakyService(outcomes, observe=(lambda: next(states)) if observed else None)


# --- no call while open ------------------------------------------------------------------------


def test_no_call_while_open_passes_on_closed_and_half_open(fake_clock: FakeClock) -> None:
    """Calls seen in closed or half-open state are fine."""
    calls = _play(_service(observed=["closed", "half-open"]), fake_clock, [0, 0])
    assert_no_call_while_open(calls)


def test_no_call_while_open_names_the_call(fake_clock: FakeClock) -> None:
    """A call that started while the breaker said open fails the check with its index."""
    calls = _play(_service(observed=["closed", "open"]), fake_clock, [0, 1])
    with pytest.raises(AssertionError, match=r"call #1 at t=1001 reached the function"):
        assert_no_call_while_open(calls)


def test_no_call_while_open_from_transitions(fake_clock: FakeClock) -> None:
    """With state transitions, a call strictly inside an open period fails."""
    calls = _play(_service(), fake_clock, [0, 5, 30])  # t = 1000, 1005, 1035
    ok = [(1000.0, "open"), (1030.0, "half-open")]
    assert_no_call_while_open(calls[:1], transitions=ok)
    assert_no_call_while_open([calls[0], calls[2]], transitions=ok)
    with pytest.raises(AssertionError, match=r"call #1 .*opened at t=1000, until t=1030"):
        assert_no_call_while_open(calls, transitions=ok)


def test_no_call_while_open_needs_some_state(fake_clock: FakeClock) -> None:
    """Without observed states or transitions the check explains how to record them."""
    calls = _play(_service(), fake_clock, [0])
    with pytest.raises(ValueError, match="observe="):
        assert_no_call_while_open(calls)


# --- within policy -----------------------------------------------------------------------------


def test_within_policy_passes_for_a_good_retry(fake_clock: FakeClock) -> None:
    """Two transient failures, waits within max_delay, then success: within policy."""
    service = _service(Fault("connection_refused"), Latency(1.0, then=Fault("timeout")), Success())
    calls = _play(service, fake_clock, [0, 1.0, 2.0])
    assert_within_policy(calls, max_attempts=3, max_delay=2.0, max_total_time=4.0)


def test_within_policy_counts_attempts(fake_clock: FakeClock) -> None:
    """More calls than max_attempts fail the check."""
    calls = _play(_service(*[Fault("timeout")] * 4), fake_clock, [0, 0, 0, 0])
    with pytest.raises(
        AssertionError, match="4 attempts were made but the policy allows at most 3"
    ):
        assert_within_policy(calls, max_attempts=3)


def test_within_policy_rejects_retrying_a_permanent_error(fake_clock: FakeClock) -> None:
    """A validation or authentication error must not be retried."""
    calls = _play(_service(Fault("http_401"), Success()), fake_clock, [0, 1])
    with pytest.raises(AssertionError, match=r"call #0 failed with a permanent error"):
        assert_within_policy(calls, max_attempts=3)
    assert_within_policy(calls, max_attempts=3, retry_permanent=True)


def test_within_policy_rejects_a_call_after_success(fake_clock: FakeClock) -> None:
    """Nothing is called again once a call succeeded."""
    calls = _play(_service(Success(), Success()), fake_clock, [0, 0])
    with pytest.raises(AssertionError, match="although call #0 had succeeded"):
        assert_within_policy(calls, max_attempts=3)


def test_within_policy_checks_retry_after(fake_clock: FakeClock) -> None:
    """After a 429 with Retry-After, the next call waits at least that long, even past max_delay."""
    calls = _play(_service(RateLimited(5.0), Success()), fake_clock, [0, 5.0])
    assert_within_policy(calls, max_attempts=2, max_delay=1.0)
    early = _play(_service(RateLimited(5.0), Success()), fake_clock, [0, 4.0])
    with pytest.raises(AssertionError, match="rate limited with Retry-After 5s"):
        assert_within_policy(early, max_attempts=2)


def test_within_policy_checks_delays_and_total_time(fake_clock: FakeClock) -> None:
    """A wait above max_delay (+ jitter), or a total above max_total_time, fails."""
    calls = _play(_service(Fault("timeout"), Success()), fake_clock, [0, 3.0])
    with pytest.raises(AssertionError, match=r"waited 3s .* max_delay 2s"):
        assert_within_policy(calls, max_attempts=2, max_delay=2.0)
    assert_within_policy(calls, max_attempts=2, max_delay=2.0, jitter=1.0)
    with pytest.raises(AssertionError, match=r"took 3s .*more than the policy's 2\.5s"):
        assert_within_policy(calls, max_attempts=2, max_total_time=2.5)
    with pytest.raises(AssertionError, match="took 4s"):
        assert_within_policy(calls, max_attempts=2, max_total_time=3.5, started_at=999.0)


def test_within_policy_validates_arguments() -> None:
    """max_attempts below 1 is a usage error."""
    with pytest.raises(ValueError, match="max_attempts"):
        assert_within_policy([], max_attempts=0)


# --- fallback iff failed -----------------------------------------------------------------------


def test_fallback_iff_failed(fake_clock: FakeClock) -> None:
    """A fallback on failure and the real result on success both pass."""
    service = FlakyService([Fault("timeout")], value=101.5)
    failed = _play(service, fake_clock, [0])
    assert_fallback_iff_failed(-1.0, failed, fallback=-1.0)
    ok = _play(FlakyService(value=101.5), fake_clock, [0])
    assert_fallback_iff_failed(101.5, ok, fallback=-1.0)
    # no call reached the function (open circuit): a fallback is expected
    assert_fallback_iff_failed(-1.0, [], fallback=-1.0)


def test_fallback_missing_on_failure(fake_clock: FakeClock) -> None:
    """A failure without the fallback names the failing call."""
    calls = _play(FlakyService([Fault("http_503")]), fake_clock, [0])
    with pytest.raises(AssertionError, match=r"call #0 failed with HTTPStatusError after 1"):
        assert_fallback_iff_failed(None, calls, fallback=-1.0)
    with pytest.raises(AssertionError, match="no call reached the function"):
        assert_fallback_iff_failed(None, [], fallback=-1.0)


def test_fallback_served_on_success(fake_clock: FakeClock) -> None:
    """A fallback served although the call succeeded fails, and so does a different result."""
    calls = _play(FlakyService(value=101.5), fake_clock, [0])
    with pytest.raises(AssertionError, match=r"succeeded with 101\.5 but the caller was served"):
        assert_fallback_iff_failed(-1.0, calls, is_fallback=lambda r: r == -1.0)
    with pytest.raises(AssertionError, match="but the caller got 7"):
        assert_fallback_iff_failed(7, calls, fallback=-1.0)


def test_fallback_must_be_distinguishable(fake_clock: FakeClock) -> None:
    """A fallback equal to the real result cannot be checked; a value or predicate is needed."""
    calls = _play(FlakyService(value=0), fake_clock, [0])
    with pytest.raises(ValueError, match="looks like the fallback"):
        assert_fallback_iff_failed(0, calls, fallback=0)
    with pytest.raises(ValueError, match="exactly one"):
        assert_fallback_iff_failed(0, calls)


# --- no duplicate orders -----------------------------------------------------------------------


def test_duplicate_order_after_read_timeout(fake_clock: FakeClock) -> None:
    """A retried order whose first attempt timed out after reaching the broker is a duplicate."""
    service = FlakyService([Fault("timeout")])
    for _ in range(2):
        with contextlib.suppress(TimeoutError):
            service.call(symbol="AAPL", qty=10, intent="t1")
    with pytest.raises(AssertionError, match="intent 't1' was executed 2 times"):
        assert_no_duplicate_orders(service.calls, intent=lambda c: c.kwargs["intent"])


def test_retry_after_refused_connection_is_not_a_duplicate(fake_clock: FakeClock) -> None:
    """An order refused before it reached the broker does not count as executed."""
    service = FlakyService([Fault("connection_refused"), RateLimited(1.0)])
    for _ in range(3):
        with contextlib.suppress(Exception):
            service.call(intent="t1")
    assert_no_duplicate_orders(service.calls, intent=lambda c: c.kwargs["intent"])
    assert sum(c.reached for c in service.calls) == 1


def test_duplicates_in_a_broker_order_book() -> None:
    """Plain order records (the broker's own book) all count."""
    book = [{"id": "a", "tick": 1}, {"id": "b", "tick": 2}]
    assert_no_duplicate_orders(book, intent=lambda o: o["tick"])
    with pytest.raises(AssertionError, match="intent 1 was executed 2 times"):
        assert_no_duplicate_orders([*book, {"id": "c", "tick": 1}], intent=lambda o: o["tick"])


def test_fallback_with_a_transformed_result(fake_clock: FakeClock) -> None:
    """``transform`` maps the recorded result to what the code under test returns."""
    calls = _play(FlakyService(value={"buying_power": 5.0}), fake_clock, [0])
    assert_fallback_iff_failed(5.0, calls, fallback=-1.0, transform=lambda r: r["buying_power"])
    with pytest.raises(AssertionError, match=r"succeeded with 5\.0 but the caller got 6\.0"):
        assert_fallback_iff_failed(6.0, calls, fallback=-1.0, transform=lambda r: r["buying_power"])
