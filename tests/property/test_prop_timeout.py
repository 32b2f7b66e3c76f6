"""Timeout properties: on the fake clock, a call times out exactly when its answer is too slow."""

from __future__ import annotations

from _budget import examples
from hypothesis import given
from hypothesis import strategies as st

import resilient
from resilient.testing import FlakyService, Hang, Latency, Outcome, use_fake_clock
from resilient.testing.strategies import outcomes


def delay_of(outcome: Outcome) -> float:
    if isinstance(outcome, Latency):
        return outcome.seconds
    if isinstance(outcome, Hang):
        return outcome.seconds
    return 0.0


@given(
    outcome=outcomes(max_latency=8.0, hang_seconds=30.0),
    limit=st.sampled_from([0.5, 1.0, 2.5, 5.0]),
)
@examples(ci=800)
async def test_timeout_expires_exactly_when_the_answer_is_too_slow(
    outcome: Outcome, limit: float
) -> None:
    """``timeout(limit)`` raises ``resilient.TimeoutError`` when the simulated answer takes at
    least ``limit`` seconds, and otherwise passes the answer (value or error) through."""
    with use_fake_clock() as clock:
        service = FlakyService([outcome], value="quote")
        guarded = resilient.timeout(limit)(service.acall)
        start = clock.monotonic()
        try:
            result, error = await guarded(), None
        except Exception as exc:
            result, error = None, exc
        if delay_of(outcome) >= limit:
            assert isinstance(error, resilient.TimeoutError)
            assert isinstance(error, TimeoutError)  # the built-in one, for plain except clauses
        else:
            expected = outcome.make_exception()
            if expected is None:
                assert result == "quote"
            else:
                assert error is service.calls[0].exception
            assert clock.monotonic() - start == delay_of(outcome)
