"""Retry properties: attempts, waits and the re-raised error follow the policy for any schedule."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from itertools import pairwise

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import FakeClock, retry
from resilient._policies.retry import zero_wait
from resilient.errors import is_transient, retry_after
from resilient.testing import (
    Call,
    FaultSchedule,
    FlakyService,
    assert_within_policy,
    use_fake_clock,
)
from resilient.testing.strategies import fault_schedules


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    initial_delay: float
    max_delay: float
    jitter: bool


policies = st.builds(
    Policy,
    max_attempts=st.integers(min_value=1, max_value=6),
    initial_delay=st.sampled_from([0.1, 0.5, 1.0, 2.0]),
    max_delay=st.sampled_from([2.0, 5.0, 30.0]),
    jitter=st.booleans(),
)
schedules = fault_schedules(max_size=8, max_latency=3.0, hang_seconds=30.0)


def expected_attempts(schedule: FaultSchedule, max_attempts: int) -> int:
    """Calls a correct retry makes: up to the first success, permanent error or the last attempt."""
    for attempt, outcome in enumerate(schedule, start=1):
        exc = outcome.make_exception()
        if exc is None or not is_transient(exc) or attempt == max_attempts:
            return attempt
    return min(len(schedule) + 1, max_attempts)  # the service succeeds after its schedule


def check_waits(calls: list[Call], policy: Policy) -> None:
    """Each wait is the jittered exponential backoff, capped, and at least the Retry-After."""
    for n, (previous, call) in enumerate(pairwise(calls), start=1):
        assert previous.ended is not None and previous.exception is not None
        wait = call.started - previous.ended
        base = policy.initial_delay * 2 ** (n - 1)
        low = min(base, policy.max_delay)
        high = min(base + (policy.initial_delay if policy.jitter else 0.0), policy.max_delay)
        asked = retry_after(previous.exception) or 0.0
        assert max(low, asked) - 1e-9 <= wait <= max(high, asked) + 1e-9, (
            f"wait {wait} before attempt {n + 1} outside [{max(low, asked)}, {max(high, asked)}]"
        )


def check_outcome(service: FlakyService, result: object, error: BaseException | None) -> None:
    last = service.calls[-1]
    if last.failed:
        # the original exception object, never a wrapper
        assert error is last.exception
    else:
        assert error is None and result == "filled"


def decorated(service: FlakyService, policy: Policy, asynchronous: bool) -> object:
    retrying = retry(
        max_attempts=policy.max_attempts,
        initial_delay=policy.initial_delay,
        max_delay=policy.max_delay,
        jitter=policy.jitter,
        budget=False,
    )
    if asynchronous:

        async def get_fill() -> str:
            return "filled"

        return retrying(service.wrap(get_fill))
    return retrying(service.wrap(lambda: "filled"))


def check_all(
    service: FlakyService,
    schedule: FaultSchedule,
    policy: Policy,
    clock: FakeClock,
    start: float,
    result: object,
    error: BaseException | None,
) -> None:
    assert len(service.calls) == expected_attempts(schedule, policy.max_attempts)
    check_outcome(service, result, error)
    check_waits(service.calls, policy)
    assert_within_policy(
        service.calls,
        max_attempts=policy.max_attempts,
        max_delay=policy.max_delay,
        started_at=start,
    )
    assert service.calls[0].started == start


@given(schedule=schedules, policy=policies)
@examples(ci=3000)
def test_sync_retry_follows_the_policy(schedule: FaultSchedule, policy: Policy) -> None:
    """A sync retry makes the right number of attempts, waits as configured, re-raises as is."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        fn = decorated(service, policy, asynchronous=False)
        start, result, error = clock.monotonic(), None, None
        try:
            result = fn()  # type: ignore[operator]
        except Exception as exc:
            error = exc
        check_all(service, schedule, policy, clock, start, result, error)


@given(schedule=schedules, policy=policies)
@examples(ci=2500)
async def test_async_retry_follows_the_policy(schedule: FaultSchedule, policy: Policy) -> None:
    """The same holds for ``async def`` functions."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        fn = decorated(service, policy, asynchronous=True)
        start, result, error = clock.monotonic(), None, None
        try:
            result = await fn()  # type: ignore[operator]
        except Exception as exc:
            error = exc
        check_all(service, schedule, policy, clock, start, result, error)


@given(schedule=schedules, policy=policies)
@examples(ci=1000)
def test_zero_wait_keeps_attempts_and_skips_sleeps(schedule: FaultSchedule, policy: Policy) -> None:
    """Inside ``zero_wait()`` the attempts are the same and no sleep happens at all."""
    with use_fake_clock() as clock, zero_wait():
        service = FlakyService(schedule)
        fn = decorated(service, policy, asynchronous=False)
        start = clock.monotonic()
        with contextlib.suppress(Exception):
            fn()  # type: ignore[operator]
        assert len(service.calls) == expected_attempts(schedule, policy.max_attempts)
        played = sum(c.duration for c in service.calls)
        assert clock.monotonic() - start == played
        # only the simulated latency/hangs of the service slept, never the retry
        assert sum(clock.sleeps) == played
