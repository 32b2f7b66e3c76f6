"""The sliding windows behind the failure-rate and slow-call rules, checked against a plain
list of the outcomes they should hold (wrap-around, eviction, reset, time buckets)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
from _policy_support import Script, invoke, make
from hypothesis import given
from hypothesis import strategies as st

from resilient import FakeClock, breaker, get_breaker
from resilient._policies.breaker_window import CountWindow, TimeWindow


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"win-{uuid.uuid4().hex[:10]}"


def test_count_window_evicts_after_it_wraps() -> None:
    """Once full, each new outcome replaces the oldest: old failures and slow calls leave."""
    window = CountWindow(3)
    window.record(True, True, 0.0)
    window.record(True, False, 0.0)
    window.record(False, True, 0.0)
    assert window.counts(0.0) == (3, 2, 2)
    window.record(False, False, 0.0)  # evicts (failed, slow)
    assert window.counts(0.0) == (3, 1, 1)
    window.record(False, False, 0.0)  # evicts (failed, not slow)
    assert window.counts(0.0) == (3, 0, 1)
    window.record(False, False, 0.0)  # evicts (ok, slow)
    assert window.counts(0.0) == (3, 0, 0)
    window.record(True, True, 0.0)
    assert window.counts(0.0) == (3, 1, 1)


def test_count_window_of_one() -> None:
    """A window of one call holds exactly the last outcome."""
    window = CountWindow(1)
    window.record(True, True, 0.0)
    assert window.counts(0.0) == (1, 1, 1)
    window.record(False, False, 0.0)
    assert window.counts(0.0) == (1, 0, 0)


def test_count_window_reset_forgets_everything() -> None:
    """reset() empties the ring: the next outcomes are counted from zero."""
    window = CountWindow(2)
    for _ in range(3):
        window.record(True, True, 0.0)
    window.reset()
    assert window.counts(0.0) == (0, 0, 0)
    window.record(False, False, 0.0)
    window.record(False, False, 0.0)
    window.record(False, False, 0.0)  # wraps over the reset ring: nothing stale evicted
    assert window.counts(0.0) == (2, 0, 0)


@pytest.mark.parametrize("size", [0, -1])
def test_windows_refuse_sizes_below_one(size: int) -> None:
    """A window needs room for one call (one second)."""
    with pytest.raises(ValueError, match="window_size"):
        CountWindow(size)
    with pytest.raises(ValueError, match="window_size"):
        TimeWindow(size)


def test_time_window_rounds_up_and_accepts_one_second() -> None:
    """A fractional size is rounded up to whole seconds; 1 second is allowed."""
    assert TimeWindow(0.5).size == 1
    assert TimeWindow(2.1).size == 3
    assert CountWindow(1).size == 1


def test_time_window_counts_only_the_last_seconds() -> None:
    """Buckets older than the window are left out, and a reused bucket starts from zero."""
    window = TimeWindow(3)
    window.record(True, True, 10.2)
    window.record(False, False, 10.9)
    window.record(True, False, 11.5)
    assert window.counts(11.9) == (3, 2, 1)
    assert window.counts(12.9) == (3, 2, 1)
    assert window.counts(13.0) == (1, 1, 0)  # second 10 left the window
    assert window.counts(14.0) == (0, 0, 0)
    window.record(False, True, 13.1)  # reuses second 10's bucket (13 % 3 == 10 % 3)
    assert window.counts(13.5) == (2, 1, 1)
    window.reset()
    assert window.counts(13.5) == (0, 0, 0)
    window.record(True, False, 13.6)
    assert window.counts(13.6) == (1, 1, 0)


outcomes = st.lists(st.tuples(st.booleans(), st.booleans()), max_size=60)


@given(size=st.integers(min_value=1, max_value=8), seq=outcomes)
def test_count_window_matches_the_last_n(size: int, seq: list[tuple[bool, bool]]) -> None:
    """For any sequence, the counts are those of the last ``size`` outcomes."""
    window = CountWindow(size)
    for i, (failed, slow) in enumerate(seq):
        window.record(failed, slow, float(i))
        last = seq[max(0, i + 1 - size) : i + 1]
        assert window.counts(float(i)) == (
            len(last),
            sum(f for f, _ in last),
            sum(s for _, s in last),
        )


@given(
    size=st.integers(min_value=1, max_value=5),
    seq=st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.booleans(), st.booleans()), max_size=40
    ),
)
def test_time_window_matches_the_last_seconds(
    size: int, seq: list[tuple[float, bool, bool]]
) -> None:
    """For any spacing, the counts are those recorded in the last ``size`` whole seconds."""
    window = TimeWindow(size)
    now = 100.0
    seen: list[tuple[int, bool, bool]] = []
    for gap, failed, slow in seq:
        now += gap
        window.record(failed, slow, now)
        seen.append((int(now), failed, slow))
        recent = [(f, s) for sec, f, s in seen if sec > int(now) - size]
        assert window.counts(now) == (
            len(recent),
            sum(f for f, _ in recent),
            sum(s for _, s in recent),
        )


async def test_rate_falls_again_after_the_window_wraps(name: str, clock: FakeClock) -> None:
    """Through the breaker: failures that left a wrapped count window no longer count, so
    recovering traffic keeps the circuit closed until the last 4 calls are 3 failures."""
    err = ConnectionError("x")
    script = Script("ok", err, err, "ok", "ok", "ok", "ok", err, err, err)
    fn = breaker(
        name, failure_threshold=100, failure_rate_threshold=0.75, window_size=4, minimum_calls=4
    )(make("sync", script))
    cb = get_breaker(name)
    for _ in range(7):
        with contextlib.suppress(ConnectionError):
            await invoke(fn)
    assert cb._window is not None and cb._window.counts(clock.monotonic()) == (4, 0, 0)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await invoke(fn)
        assert cb.state == "closed"  # at most 2 of the last 4 failed
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert cb.state == "open"  # 3 of the last 4 failed


async def test_slow_failure_is_counted_once(name: str, clock: FakeClock) -> None:
    """A call that is both slow and failed counts once as slow: two slow failures in a window
    of 5 stay below a 0.5 slow rate."""

    def slow_fail() -> None:
        clock.advance(2.0)
        raise ConnectionError("slow and failed")

    fn = breaker(
        name,
        failure_threshold=100,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=5,
        minimum_calls=5,
    )(make("sync", Script("ok", "ok", "ok")))
    slow = breaker(name)(make("sync", slow_fail))
    for _ in range(3):
        await invoke(fn)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            await invoke(slow)
    snap = get_breaker(name)._window
    assert snap is not None and snap.counts(clock.monotonic()) == (5, 2, 2)
    assert get_breaker(name).state == "closed"


def test_time_window_near_clock_zero_starts_and_resets_empty() -> None:
    """Right after the clock's origin every bucket is inside the window: a fresh or reset
    window must still count nothing."""
    window = TimeWindow(5)
    assert window.counts(0.0) == (0, 0, 0)
    window.record(True, True, 0.5)
    window.record(False, False, 1.5)
    assert window.counts(1.5) == (2, 1, 1)
    window.reset()
    assert window.counts(1.5) == (0, 0, 0)
    window.record(False, True, 2.0)
    assert window.counts(2.0) == (1, 0, 1)
