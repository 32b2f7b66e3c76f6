"""Breaker properties: the circuit follows a reference model for every schedule and timing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitOpenError, FakeClock, breaker, breakers
from resilient.testing import (
    Fault,
    FlakyService,
    Hang,
    Latency,
    Outcome,
    Success,
    assert_no_call_while_open,
    use_fake_clock,
)
from resilient.testing.strategies import outcomes

_names = itertools.count()

gaps = st.integers(min_value=0, max_value=80).map(lambda q: q / 4)  # 0 .. 20 s
steps = st.lists(
    st.tuples(gaps, outcomes(hang_seconds=30.0, max_latency=3.0)), min_size=1, max_size=30
)
params = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(min_value=1, max_value=5),
        "reset_timeout": st.sampled_from([1.0, 5.0, 10.0, 60.0]),
        "success_threshold": st.integers(min_value=1, max_value=3),
    }
)


@dataclass
class Model:
    """The circuit as the design describes it (consecutive failures, timed open, trials)."""

    failure_threshold: int
    reset_timeout: float
    success_threshold: int
    state: str = "closed"
    failures: int = 0
    trial_successes: int = 0
    opened_at: float = 0.0

    def admits(self, now: float) -> bool:
        if self.state == "open":
            if now < self.opened_at + self.reset_timeout:
                return False
            self.state = "half-open"
            self.trial_successes = 0
        return True

    def record(self, failed: bool, now: float) -> None:
        if self.state == "half-open":
            if failed:
                self.state, self.opened_at = "open", now
            else:
                self.trial_successes += 1
                if self.trial_successes >= self.success_threshold:
                    self.state, self.failures = "closed", 0
        elif failed:
            self.failures += 1
            if self.failures >= self.failure_threshold:
                self.state, self.opened_at = "open", now
        else:
            self.failures = 0


@contextlib.contextmanager
def fresh_breaker(**options: Any) -> Iterator[tuple[str, Callable[[Any], Any]]]:
    """A breaker with a name no other example uses, forgotten afterwards."""
    name = f"prop-breaker-{next(_names)}"
    decorate = breaker(name, **options)
    try:
        yield name, decorate
    finally:
        breakers.remove(name)


def _check_step(
    model: Model,
    service: FlakyService,
    calls_before: int,
    error: BaseException | None,
    clock: FakeClock,
    started: float,
) -> None:
    reached = len(service.calls) > calls_before
    expected = model.admits(started)
    assert reached == expected, (
        f"t={started:g}: model state {model.state!r} expected "
        f"{'a call' if expected else 'a rejection'}"
    )
    if not reached:
        assert isinstance(error, CircuitOpenError)
        assert 0 < error.retry_after <= model.reset_timeout
        return
    call = service.calls[-1]
    # the call's own error is what the caller sees (never a CircuitOpenError for a real call)
    assert error is call.exception
    model.record(call.failed, clock.monotonic())


@given(steps=steps, options=params)
@examples(ci=3000)
def test_sync_breaker_follows_the_model(
    steps: list[tuple[float, Outcome]], options: dict[str, float]
) -> None:
    """For any schedule and spacing of calls, a sync breaker admits and rejects as the model."""
    with use_fake_clock() as clock, fresh_breaker(**options) as (name, decorate):
        cb = breakers.get(name)
        service = FlakyService([o for _, o in steps], observe=lambda: cb.state)
        fn = decorate(service.wrap(lambda: "ok"))
        model = Model(**options)
        for gap, _ in steps:
            clock.advance(gap)
            started, before, error = clock.monotonic(), len(service.calls), None
            try:
                fn()
            except Exception as exc:
                error = exc
            _check_step(model, service, before, error, clock, started)
            assert cb.state == model.state
        assert_no_call_while_open(service.calls)
        snap = cb.snapshot()
        assert snap.total_calls == len(service.calls)
        assert snap.failure_count == sum(c.failed for c in service.calls)
        assert snap.rejected_calls == len(steps) - len(service.calls)
        assert 0.0 <= snap.success_rate <= 1.0


@given(steps=steps, options=params)
@examples(ci=2500)
async def test_async_breaker_follows_the_model(
    steps: list[tuple[float, Outcome]], options: dict[str, float]
) -> None:
    """The same model holds for ``async def`` functions."""
    with use_fake_clock() as clock, fresh_breaker(**options) as (name, decorate):
        cb = breakers.get(name)
        service = FlakyService([o for _, o in steps], observe=lambda: cb.state)

        async def get_quote() -> str:
            return "ok"

        fn = decorate(service.wrap(get_quote))
        model = Model(**options)
        for gap, _ in steps:
            clock.advance(gap)
            started, before, error = clock.monotonic(), len(service.calls), None
            try:
                await fn()
            except Exception as exc:
                error = exc
            _check_step(model, service, before, error, clock, started)
        assert_no_call_while_open(service.calls)


trial_outcomes = st.sampled_from(
    [Success(), Fault("timeout"), Latency(0.5), Latency(2.0, then=Fault("http_503")), Hang(30.0)]
)


@given(
    permits=st.integers(min_value=1, max_value=4),
    rounds=st.lists(
        st.tuples(st.integers(min_value=1, max_value=12), trial_outcomes), min_size=1, max_size=4
    ),
)
@examples(ci=1500)
async def test_half_open_admits_only_its_permits(
    permits: int, rounds: list[tuple[int, Outcome]]
) -> None:
    """Concurrent callers of a half-open circuit: only its permitted trials reach the function."""

    async def get_quote() -> str:
        # yield to the loop even with zero latency, so the callers really overlap
        await asyncio.sleep(0)
        return "ok"

    with (
        use_fake_clock() as clock,
        fresh_breaker(failure_threshold=1, reset_timeout=10.0, half_open_max_calls=permits) as (
            name,
            decorate,
        ),
    ):
        cb = breakers.get(name)
        for concurrent, outcome in rounds:
            if cb.state != "open":
                trip = decorate(FlakyService([Fault("connection_refused")]).wrap(get_quote))
                with contextlib.suppress(ConnectionRefusedError):
                    await trip()
            assert cb.state == "open"
            clock.advance(10.0)
            service = FlakyService(then=outcome)
            fn = decorate(service.wrap(get_quote))
            results = await asyncio.gather(
                *(fn() for _ in range(concurrent)), return_exceptions=True
            )
            trials = len(service.calls)
            assert trials == min(concurrent, permits)
            rejected = [r for r in results if isinstance(r, CircuitOpenError)]
            assert len(rejected) == concurrent - trials
            failed = outcome.make_exception() is not None
            assert cb.state == ("open" if failed else "closed")
