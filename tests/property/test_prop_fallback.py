"""Fallback properties: the fallback is served exactly when the call failed, through the stack."""

from __future__ import annotations

import itertools
from typing import Any

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

from resilient import CircuitOpenError, resilient
from resilient._breaker import breakers
from resilient._fallback import fallback, fallback_status
from resilient.testing import (
    FlakyService,
    Outcome,
    assert_fallback_iff_failed,
    assert_no_call_while_open,
    assert_within_policy,
    reset_state,
    use_fake_clock,
)
from resilient.testing.strategies import outcomes

FALLBACK = -1.0

gaps = st.integers(min_value=0, max_value=120).map(lambda q: q / 4)  # 0 .. 30 s
invocations = st.lists(gaps, min_size=1, max_size=12)
schedules = st.lists(outcomes(max_latency=2.0, hang_seconds=20.0), max_size=40)
stacks = st.fixed_dictionaries(
    {
        "failure_threshold": st.integers(min_value=1, max_value=4),
        "reset_timeout": st.sampled_from([2.0, 15.0, 60.0]),
        "max_attempts": st.integers(min_value=1, max_value=4),
        "initial_delay": st.sampled_from([0.25, 1.0]),
        "max_delay": st.sampled_from([1.0, 4.0]),
    }
)


def _stack(service: FlakyService, options: dict[str, Any], asynchronous: bool) -> tuple[str, Any]:
    # One name for every example, with the registries reset in between: per-name state
    # (fallback episodes, metrics) stays small however many examples run.
    reset_state(forget_breakers=True)
    name = "prop-stack"
    decorate = resilient(name, value=FALLBACK, budget=False, **options)
    if asynchronous:

        async def get_price(symbol: str) -> float:
            return 101.25

        return name, decorate(service.wrap(get_price))
    return name, decorate(service.wrap(lambda symbol: 101.25))


def _check_invocation(
    name: str, service: FlakyService, before: int, result: float, options: dict[str, Any]
) -> None:
    calls = service.calls[before:]
    assert_fallback_iff_failed(result, calls, fallback=FALLBACK)
    assert_no_call_while_open(calls)
    assert_within_policy(
        calls, max_attempts=options["max_attempts"], max_delay=options["max_delay"]
    )
    status = fallback_status()[name]
    assert status.degraded == (result == FALLBACK)


@given(schedule=schedules, waits=invocations, options=stacks)
@examples(ci=1800)
def test_sync_stack_serves_fallback_exactly_on_failure(
    schedule: list[Outcome], waits: list[float], options: dict[str, Any]
) -> None:
    """fallback(retry(breaker(fn))): every invocation returns the real price or, exactly when
    it failed, the fallback; no call passes an open circuit; retries stay within policy."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        name, get_price = _stack(service, options, asynchronous=False)
        service.observe = lambda: breakers.get(name).state
        served = 0
        try:
            for wait in waits:
                clock.advance(wait)
                before = len(service.calls)
                result = get_price("AAPL")
                served += result == FALLBACK
                _check_invocation(name, service, before, result, options)
            assert fallback_status()[name].served == served
        finally:
            breakers.remove(name)


@given(schedule=schedules, waits=invocations, options=stacks)
@examples(ci=1500)
async def test_async_stack_serves_fallback_exactly_on_failure(
    schedule: list[Outcome], waits: list[float], options: dict[str, Any]
) -> None:
    """The same stack on an ``async def`` function."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        name, get_price = _stack(service, options, asynchronous=True)
        service.observe = lambda: breakers.get(name).state
        try:
            for wait in waits:
                clock.advance(wait)
                before = len(service.calls)
                result = await get_price("AAPL")
                _check_invocation(name, service, before, result, options)
        finally:
            breakers.remove(name)


symbols = st.sampled_from(["AAPL", "MSFT", "SPY"])


@given(
    steps=st.lists(st.tuples(gaps, symbols), min_size=1, max_size=15),
    schedule=schedules,
    ttl=st.sampled_from([3.3, 10.7, 45.1]),
)
@examples(ci=1200)
def test_cached_fallback_serves_the_last_good_result(
    steps: list[tuple[float, str]], schedule: list[Outcome], ttl: float
) -> None:
    """``fallback(cache=True)`` serves the last good result for the same arguments while it is
    younger than the TTL, and re-raises the original error when there is none."""
    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        quotes = itertools.count()
        fn = service.wrap(lambda symbol: f"{symbol}#{next(quotes)}")
        reset_state(
            forget_breakers=True
        )  # an empty cache and fresh fallback counters for every example
        get_quote = fallback(cache=True, cache_ttl=ttl, name="prop-cache")(fn)
        last_good: dict[str, tuple[str, float]] = {}
        for wait, symbol in steps:
            clock.advance(wait)
            before = len(service.calls)
            try:
                result: str | None = get_quote(symbol)
                error = None
            except Exception as exc:
                result, error = None, exc
            call = service.calls[before]
            now = clock.monotonic()
            if not call.failed:
                assert result == call.result
                last_good[symbol] = (call.result, call.ended or now)
                continue
            cached = last_good.get(symbol)
            if cached is not None and now < cached[1] + ttl:
                assert result == cached[0], f"expected the cached {cached[0]!r}"
            else:
                assert error is call.exception, "the original error must be re-raised"


@given(schedule=schedules, waits=invocations)
@examples(ci=600)
def test_fallback_func_gets_the_original_error(schedule: list[Outcome], waits: list[float]) -> None:
    """``fallback(func=f)`` calls ``f(exc, *args)`` with the error that ended the call."""
    seen: list[BaseException] = []

    def stale_price(exc: BaseException, symbol: str) -> float:
        seen.append(exc)
        return FALLBACK

    with use_fake_clock() as clock:
        service = FlakyService(schedule)
        reset_state(forget_breakers=True)
        name = "prop-func"
        decorate = resilient(name, func=stale_price, failure_threshold=2, max_attempts=2)
        get_price = decorate(service.wrap(lambda symbol: 101.25))
        try:
            for wait in waits:
                clock.advance(wait)
                before, handled = len(service.calls), len(seen)
                result = get_price("AAPL")
                calls = service.calls[before:]
                assert_fallback_iff_failed(result, calls, fallback=FALLBACK)
                if result == FALLBACK:
                    exc = seen[handled]
                    if calls:
                        assert exc is calls[-1].exception or isinstance(exc, CircuitOpenError)
                    else:
                        assert isinstance(exc, CircuitOpenError)
        finally:
            breakers.remove(name)
