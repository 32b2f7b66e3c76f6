"""The error tracker: counted once, by category and component, logged once with the
correlation id and a sanitized message; rolling error rate; correlation ids across tasks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resilient import EventKind, FakeClock, PolicyEvent, disable_logging, enable_logging, use_clock
from resilient._core.events import emit
from resilient._core.sanitize import register_secret
from resilient.errors import (
    ErrorCategory,
    ErrorTracker,
    correlation_id,
    current_correlation_id,
    record_error,
    tracker,
)


@pytest.fixture(autouse=True)
def _clean_tracker() -> Iterator[None]:
    tracker.reset()
    yield
    tracker.reset()


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    enable_logging("DEBUG", json_lines=True, sink=lines.append)
    yield lines
    disable_logging()


def test_same_exception_is_counted_once_across_layers() -> None:
    """Several layers reporting one exception object count it once; another object counts."""
    exc = ConnectionResetError("reset by peer")
    first = record_error(exc, component="alpaca")
    assert first is not None
    assert first.category is ErrorCategory.NETWORK
    assert record_error(exc, component="alpaca") is None
    assert tracker.record(exc) is None
    record_error(ValueError("bad symbol"), component="polygon")
    snap = tracker.snapshot()
    assert snap["total_errors"] == 2
    assert snap["by_category"] == {"network": 1, "validation": 1}
    assert snap["by_component"] == {"alpaca": 1, "polygon": 1}
    json.dumps(snap)


def test_exception_without_dict_is_still_counted_once() -> None:
    """Exceptions that refuse attributes are remembered by identity instead."""

    class Slotted(Exception):
        __slots__ = ()

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(name)

    exc = Slotted("x")
    assert tracker.record(exc) is not None
    assert tracker.record(exc) is None
    assert tracker.total_errors == 1


def test_error_is_logged_once_with_correlation_id_and_masked_secret(log_lines: list[str]) -> None:
    """One log record per error, carrying the correlation id; a secret never appears."""
    secret = "s3cr3t-value-991"
    register_secret(secret)
    exc = ConnectionRefusedError(f"connect failed for token {secret} at db")
    with correlation_id("req-42"):
        record_error(exc, component="database")
        record_error(exc, component="database")
    ours = [json.loads(line) for line in log_lines if "ConnectionRefusedError" in line]
    assert len(ours) == 1
    assert ours[0]["correlation_id"] == "req-42"
    assert ours[0]["level"] == "WARNING"  # transient errors warn, others are errors
    assert secret not in "".join(log_lines)
    assert "***" in ours[0]["message"]


def test_non_transient_error_logs_at_error_level(log_lines: list[str]) -> None:
    """Authentication and validation errors are logged as errors."""
    record_error(PermissionError("denied"), component="alpaca")
    records = [json.loads(line) for line in log_lines if "PermissionError" in line]
    assert [r["level"] for r in records] == ["ERROR"]


def test_error_outside_any_context_gets_a_generated_correlation_id() -> None:
    """With no correlation id set, the failure path creates one."""

    async def fail() -> str | None:
        record = record_error(TimeoutError("slow"))
        assert record is not None
        return record.correlation_id

    async def main() -> list[str | None]:
        return list(await asyncio.gather(asyncio.create_task(fail()), asyncio.create_task(fail())))

    ids = asyncio.run(main())
    assert all(ids) and ids[0] != ids[1]  # each top-level task its own id


async def test_correlation_id_survives_gather_and_task_creation() -> None:
    """Errors recorded in gathered coroutines and created tasks carry the caller's id."""

    async def failing(n: int) -> str:
        await asyncio.sleep(0)
        record = record_error(ConnectionResetError(f"reset {n}"), component="feed")
        assert record is not None
        return record.correlation_id

    async def nested() -> str:
        return await asyncio.create_task(failing(99))

    with correlation_id("trade-7"):
        gathered = await asyncio.gather(*(failing(i) for i in range(5)))
        task = asyncio.create_task(failing(5))
        created = await task
        deep = await nested()
        assert current_correlation_id() == "trade-7"
    assert set(gathered) == {"trade-7"}
    assert created == deep == "trade-7"
    assert current_correlation_id() is None
    assert [r.correlation_id for r in tracker.recent] == ["trade-7"] * 7


def test_rolling_error_rate_uses_call_counter_and_window() -> None:
    """Errors per operation over the window; old errors and calls fall out of it."""
    clock = FakeClock()
    calls = {"n": 0}
    tr = ErrorTracker(window=60.0, clock=clock, call_counter=lambda: calls["n"])
    assert tr.error_rate() == 0.0
    calls["n"] = 100
    for i in range(5):
        tr.record(ConnectionResetError(str(i)), log=False)
    assert tr.error_rate() == pytest.approx(0.05)
    tr.sample()
    clock.advance(61.0)
    assert tr.errors_in_window() == 0
    assert tr.error_rate() == 0.0
    calls["n"] = 110
    tr.sample()
    for i in range(4):
        tr.record(TimeoutError(str(i)), log=False)
    # 4 errors over the 10 calls made since the sample at the window's start
    assert tr.error_rate() == pytest.approx(0.4)
    assert tr.total_errors == 9


def test_error_rate_without_counted_calls_counts_errors_as_operations() -> None:
    """An error whose call no counter saw still counts as one failed operation."""
    tr = ErrorTracker(clock=FakeClock(), call_counter=lambda: 0)
    tr.record(ConnectionResetError(), log=False)
    tr.record_calls(3)
    assert tr.error_rate() == pytest.approx(1 / 3)


def test_policy_call_failed_and_fallback_events_are_counted() -> None:
    """The tracker listens to the policy hooks: final failures and served fallbacks count."""
    failed = ConnectionResetError("reset")
    emit(PolicyEvent(EventKind.CALL_FAILED, "alpaca", exception=failed))
    served = TimeoutError("slow")
    emit(
        PolicyEvent(
            EventKind.FALLBACK_SERVED, "polygon", exception=served, source="cache", elapsed=0.02
        )
    )
    emit(PolicyEvent(EventKind.RETRY, "alpaca", exception=ConnectionResetError("x"), attempt=1))
    snap = tracker.snapshot()
    assert snap["total_errors"] == 2  # retried attempts are not final errors
    assert snap["by_component"] == {"alpaca": 1, "polygon": 1}


def test_instrumentation_is_installed_once_and_can_be_removed() -> None:
    """The package subscribes the tracker, metrics and component stats once; install() again
    adds nothing (one event is counted once), and uninstall() stops the counting."""
    from resilient import metrics
    from resilient._instrument import stats as _stats
    from resilient._instrument import subscribers as _instrumentation

    assert _instrumentation.installed() and _instrumentation.install()
    metrics.reset()
    _stats.reset_stats()
    served = TimeoutError("slow")
    emit(PolicyEvent(EventKind.FALLBACK_SERVED, "quotes", served, source="cache", elapsed=0.5))
    assert tracker.snapshot()["by_component"] == {"quotes": 1}
    assert metrics.snapshot()["fallbacks"] == {"quotes|cache": 1}
    assert metrics.snapshot()["errors"] == {"timeout": 1}
    assert _stats.stats("quotes").summary()["cached_reads"] == 1
    _instrumentation.uninstall()
    try:
        assert not _instrumentation.installed()
        emit(PolicyEvent(EventKind.CALL_FAILED, "quotes", exception=ConnectionResetError("x")))
        assert tracker.snapshot()["total_errors"] == 1
    finally:
        _instrumentation.install()
    emit(PolicyEvent(EventKind.CALL_FAILED, "quotes", exception=ConnectionResetError("y")))
    assert tracker.snapshot()["total_errors"] == 2
    assert metrics.snapshot()["errors"] == {"timeout": 1, "network": 1}
    metrics.reset()


@settings(max_examples=30, deadline=None)
@given(
    st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=12, max_size=24
    ).filter(lambda s: any(c.isdigit() for c in s) and any(c.isupper() for c in s))
)
def test_generated_secrets_never_reach_records_or_snapshot(secret: str) -> None:
    """Any registered secret inside an exception message is masked in what the tracker keeps."""
    register_secret(secret)
    tracker.reset()
    record = tracker.record(RuntimeError(f"upstream said {secret}!"), component="svc", log=False)
    assert record is not None
    assert secret not in record.message
    assert secret not in json.dumps(tracker.snapshot())


def test_fake_clock_timestamps() -> None:
    """Records take their times from the clock in force."""
    clock = FakeClock(start=5.0, wall=1_000.0)
    with use_clock(clock):
        record = record_error(RuntimeError("x"))
    assert record is not None
    assert record.monotonic == 5.0
    assert record.timestamp == 1_005.0


def test_trackers_and_resets_count_independently() -> None:
    """Counting once is per tracker: another tracker, or the same one after reset, counts again."""
    exc = ConnectionResetError("x")
    assert tracker.record(exc, log=False) is not None
    other = ErrorTracker(clock=FakeClock(), call_counter=lambda: 0)
    assert other.record(exc, log=False) is not None
    assert other.record(exc, log=False) is None
    tracker.reset()
    assert tracker.record(exc, log=False) is not None


def test_error_storm_keeps_memory_bounded_and_counts_exactly() -> None:
    """Ten thousand errors in one second are one bucket, all counted in the window."""
    clock = FakeClock()
    tr = ErrorTracker(clock=clock, call_counter=lambda: 0)
    for i in range(10_000):
        tr.record(ConnectionResetError(str(i)), log=False)
    assert tr.errors_in_window() == 10_000
    assert len(tr._buckets) == 1
    clock.advance(62)
    assert tr.errors_in_window() == 0
