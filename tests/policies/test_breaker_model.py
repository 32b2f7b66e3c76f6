"""The breaker against a simple reference model: random outcomes, clock advances, resets."""

from __future__ import annotations

import uuid

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from resilient import CircuitOpenError, FakeClock, breaker, breakers, get_breaker, set_clock


class Model:
    """The documented behaviour, written as plainly as possible."""

    def __init__(self, failure_threshold: int, success_threshold: int, timeout: float) -> None:
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.timeout = timeout
        self.state = "closed"
        self.consecutive = 0
        self.trial_successes = 0
        self.opened_at = 0.0
        self.successes = self.failures = self.rejected = 0

    def call(self, now: float, ok: bool) -> bool:
        """Whether the function runs; updates the state."""
        if self.state == "open":
            if now < self.opened_at + self.timeout:
                self.rejected += 1
                return False
            self.state = "half-open"
            self.trial_successes = 0
        if ok:
            self.successes += 1
            self.consecutive = 0
            if self.state == "half-open":
                self.trial_successes += 1
                if self.trial_successes >= self.success_threshold:
                    self.state = "closed"
            return True
        self.failures += 1
        self.consecutive += 1
        if self.state == "half-open" or self.consecutive >= self.failure_threshold:
            self.state = "open"
            self.opened_at = now
        return True

    def reset(self) -> None:
        self.state = "closed"
        self.consecutive = 0
        self.successes = self.failures = self.rejected = 0


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.previous = set_clock(self.clock)
        self.name = f"model-{uuid.uuid4().hex[:10]}"
        self.ran = 0

    @initialize(
        failure_threshold=st.integers(1, 4),
        success_threshold=st.integers(1, 3),
        timeout=st.sampled_from([0.5, 1.0, 5.0, 30.0]),
    )
    def setup(self, failure_threshold: int, success_threshold: int, timeout: float) -> None:
        self.model = Model(failure_threshold, success_threshold, timeout)

        @breaker(
            self.name,
            failure_threshold=failure_threshold,
            success_threshold=success_threshold,
            reset_timeout=timeout,
        )
        def service(ok: bool) -> str:
            self.ran += 1
            if not ok:
                raise ConnectionError("down")
            return "ok"

        self.service = service

    @rule(ok=st.booleans())
    def call(self, ok: bool) -> None:
        expected_run = self.model.call(self.clock.monotonic(), ok)
        before = self.ran
        try:
            result = self.service(ok)
        except CircuitOpenError:
            assert not expected_run, "rejected a call the model lets through"
        except ConnectionError:
            assert expected_run and not ok
        else:
            assert expected_run and ok and result == "ok"
        assert self.ran - before == int(expected_run)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 4.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def wait_out_the_timeout(self) -> None:
        if hasattr(self, "model"):
            self.clock.advance(self.model.timeout)

    @rule()
    def reset(self) -> None:
        breakers.reset(self.name)
        self.model.reset()

    @invariant()
    def agrees_with_model(self) -> None:
        if not hasattr(self, "model"):
            return
        snap = get_breaker(self.name).snapshot()
        assert snap.state == self.model.state
        assert snap.failure_count == self.model.failures
        assert snap.success_count == self.model.successes
        assert snap.rejected_calls == self.model.rejected
        assert 0.0 <= snap.success_rate <= 1.0

    def teardown(self) -> None:
        set_clock(self.previous)
        breakers.remove(self.name)


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(
    TestBreakerModel.settings, max_examples=150, stateful_step_count=40
)
