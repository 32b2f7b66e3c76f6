"""Hypothesis strategies for fault schedules: coverage of every fault and minimal shrinking."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import find, given, settings

from resilient.errors import is_transient
from resilient.testing import (
    FAULT_KINDS,
    Fault,
    FaultSchedule,
    FlakyService,
    Hang,
    Latency,
    RateLimited,
    Success,
    fault_schedules,
    outcomes,
    permanent_faults,
    transient_faults,
)
from resilient.testing.strategies import PERMANENT_KINDS, TRANSIENT_KINDS

FIND = settings(database=None, derandomize=True, max_examples=2000)


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_fault_kind_is_generated(kind: str) -> None:
    """Each fault kind appears in some generated schedule."""
    found = find(fault_schedules(), lambda s: Fault(kind) in s, settings=FIND)
    assert found == FaultSchedule([Fault(kind)])


@pytest.mark.parametrize("kind", [Latency, Hang, RateLimited])
def test_timed_outcomes_are_generated(kind: type) -> None:
    """Latency, hangs and rate limits with a Retry-After appear too."""
    found = find(
        fault_schedules(),
        lambda s: any(isinstance(o, kind) for o in s),
        settings=FIND,
    )
    assert len(found) == 1 and isinstance(found[0], kind)


def test_shrinks_to_the_minimal_failing_schedule() -> None:
    """A property broken by two transient faults shrinks to exactly two plain faults."""
    transient = set(TRANSIENT_KINDS)
    found = find(
        fault_schedules(max_size=30),
        lambda s: sum(isinstance(o, Fault) and o.kind in transient for o in s) >= 2,
        settings=FIND,
    )
    assert found == FaultSchedule([Fault(TRANSIENT_KINDS[0])] * 2)


def test_shrinks_timed_values_to_round_numbers() -> None:
    """A long Retry-After shrinks to the smallest value that still breaks the property."""
    found = find(
        fault_schedules(),
        lambda s: any(isinstance(o, RateLimited) and o.retry_after > 10 for o in s),
        settings=FIND,
    )
    assert found == FaultSchedule([RateLimited(10.25)])


@given(fault_schedules(min_size=2, max_size=5, kinds=["http_401"], latency=False, hang=False))
def test_size_and_kind_limits_are_respected(schedule: FaultSchedule) -> None:
    """min_size/max_size bound the length; only the requested kinds appear."""
    assert 2 <= len(schedule) <= 5
    for outcome in schedule:
        assert outcome in (Success(), Fault("http_401")) or isinstance(outcome, RateLimited)


@given(transient_faults(), permanent_faults())
def test_transient_and_permanent_faults(transient: Fault, permanent: Fault) -> None:
    """Transient faults are retryable categories; permanent ones are not."""
    assert transient.kind in TRANSIENT_KINDS
    assert transient.category in ("network", "timeout", "database")
    assert is_transient(transient.make_exception())
    assert permanent.kind in PERMANENT_KINDS
    assert not is_transient(permanent.make_exception())
    assert set(TRANSIENT_KINDS) | set(PERMANENT_KINDS) | {"http_429"} == set(FAULT_KINDS)


@given(fault_schedules(max_size=10))
def test_schedules_play_on_a_flaky_service(schedule: FaultSchedule) -> None:
    """Every generated schedule plays: one recorded call per outcome, failing where it should."""
    from resilient.testing import use_fake_clock

    service = FlakyService(schedule)
    with use_fake_clock():
        for _ in schedule:
            with contextlib.suppress(Exception):  # the outcome decides; checked below
                service.call()
    assert len(service.calls) == len(schedule)
    for call, outcome in zip(service.calls, schedule, strict=True):
        assert call.failed == (outcome.make_exception() is not None)


def test_bad_arguments_are_explained() -> None:
    """Impossible sizes, unknown kinds and empty strategies give a clear error."""
    with pytest.raises(ValueError, match="min_size"):
        fault_schedules(min_size=3, max_size=1)
    with pytest.raises(ValueError, match="unknown fault kind"):
        fault_schedules(kinds=["nope"])
    with pytest.raises(ValueError, match="nothing to draw"):
        outcomes(kinds=(), success=False, latency=False, hang=False, rate_limit=False)
