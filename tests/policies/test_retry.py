"""@retry: transient-only default, original errors, Retry-After, deadlines, budget, idempotency."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tenacity
from _policy_support import MODES, Script, invoke, make
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient import (
    CircuitOpenError,
    EventKind,
    FakeClock,
    RiskLimitError,
    deadline,
    retry,
    use_clock,
)
from resilient._policies.retry import get_retry_budget
from resilient.config import reload_config, switches
from resilient.testing import capture_events, zero_wait_retries


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"rt-{uuid.uuid4().hex[:10]}"


class RateLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__("429 too many requests")
        self.retry_after = retry_after


class Response:
    def __init__(self, status_code: int, headers: dict[str, str]) -> None:
        self.status_code = status_code
        self.headers = headers


class HTTPError(Exception):
    def __init__(self, status_code: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status_code}")
        self.response = Response(status_code, headers or {})


@pytest.mark.parametrize("mode", MODES)
async def test_retries_transient_failures_until_success(mode: str, name: str) -> None:
    """Two connection errors, then the value: three calls, no error."""
    script = Script(ConnectionError("a"), TimeoutError("b"), "value")
    fn = retry(max_attempts=3, name=name)(make(mode, script))
    assert await invoke(fn) == "value"
    assert script.calls == 3


@pytest.mark.parametrize("mode", MODES)
async def test_reraises_the_original_exception_object(mode: str, name: str) -> None:
    """When attempts run out, the last attempt's own exception object is raised, unchained."""
    errors = [ConnectionError(f"attempt {i}") for i in range(4)]
    script = Script(*errors)
    fn = retry(max_attempts=4, name=name)(make(mode, script))
    with pytest.raises(ConnectionError) as info:
        await invoke(fn)
    assert info.value is errors[-1]
    assert info.value.__context__ is None
    assert script.calls == 4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad symbol"),
        PermissionError("forbidden"),
        HTTPError(401),
        HTTPError(422),
        CircuitOpenError("svc", "open", 3.0),
        RiskLimitError("trading.max_order_size", 10, 20),
        KeyError("x"),
    ],
    ids=lambda e: type(e).__name__ + str(getattr(getattr(e, "response", None), "status_code", "")),
)
async def test_does_not_retry_permanent_failures(mode: str, error: Exception, name: str) -> None:
    """Validation, authentication, open circuits, risk limits and unknown errors run once."""
    script = Script(error, "never")
    fn = retry(max_attempts=5, name=name)(make(mode, script))
    with pytest.raises(type(error)) as info:
        await invoke(fn)
    assert info.value is error
    assert script.calls == 1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "retry_on",
    [KeyError, (LookupError, OSError), lambda exc: isinstance(exc, KeyError)],
    ids=["type", "tuple", "predicate"],
)
async def test_retry_on_forms(mode: str, retry_on: Any, name: str) -> None:
    """retry_on accepts a type, a tuple or a predicate, and replaces the default."""
    script = Script(KeyError("a"), KeyError("b"), "ok")
    fn = retry(max_attempts=3, retry_on=retry_on, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert script.calls == 3
    only = Script(ValueError("no"))
    fn2 = retry(max_attempts=3, retry_on=retry_on, name=name)(make(mode, only))
    with pytest.raises(ValueError):
        await invoke(fn2)
    assert only.calls == 1


@pytest.mark.parametrize("mode", MODES)
async def test_backoff_grows_exponentially(mode: str, name: str, clock: FakeClock) -> None:
    """Waits double from initial_delay up to max_delay (no jitter)."""
    script = Script(*[ConnectionError("x")] * 5)
    fn = retry(max_attempts=6, initial_delay=1, max_delay=4, jitter=False, name=name)(
        make(mode, script)
    )
    assert await invoke(fn) == "ok"
    assert [s for s in clock.sleeps if s > 0] == [1, 2, 4, 4, 4]


@pytest.mark.parametrize("mode", MODES)
async def test_jitter_stays_within_bounds(mode: str, name: str, clock: FakeClock) -> None:
    """With jitter each wait lies in [base, base + initial_delay] and under max_delay."""
    script = Script(*[ConnectionError("x")] * 4)
    fn = retry(max_attempts=5, initial_delay=1, max_delay=3, name=name)(make(mode, script))
    await invoke(fn)
    sleeps = [s for s in clock.sleeps if s > 0]
    assert len(sleeps) == 4
    for base, slept in zip([1, 2, 4, 8], sleeps, strict=True):
        assert min(base, 3) <= slept <= min(base + 1, 3) + 1e-9


@pytest.mark.parametrize("mode", MODES)
async def test_tenacity_wait_strategy(mode: str, name: str, clock: FakeClock) -> None:
    """Any tenacity wait/stop strategy can drive attempts 2…N."""
    script = Script(*[ConnectionError("x")] * 5)
    fn = retry(wait=tenacity.wait_fixed(3), stop=tenacity.stop_after_attempt(3), name=name)(
        make(mode, script)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert [s for s in clock.sleeps if s > 0] == [3, 3]
    assert script.calls == 3


@pytest.mark.parametrize("mode", MODES)
async def test_tenacity_stop_sees_the_upcoming_wait(mode: str, name: str, clock: FakeClock) -> None:
    """As in tenacity, the stop strategy runs after the wait is computed: stop_before_delay(4)
    with waits 1, 4, 7… stops after attempt 2 (1 s slept + 4 s upcoming >= 4 s)."""
    script = Script(*[ConnectionError("x")] * 5)
    fn = retry(
        wait=tenacity.wait_incrementing(start=1, increment=3),
        stop=tenacity.stop_before_delay(4),
        name=name,
    )(make(mode, script))
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert script.calls == 2
    assert [s for s in clock.sleeps if s > 0] == [1]


@pytest.mark.parametrize("mode", MODES)
async def test_tenacity_stop_after_delay_reads_elapsed_time(
    mode: str, name: str, clock: FakeClock
) -> None:
    """stop_after_delay sees the time since the call started on the current clock."""
    script = Script(*[ConnectionError("x")] * 9)
    fn = retry(wait=tenacity.wait_fixed(2), stop=tenacity.stop_after_delay(5), name=name)(
        make(mode, script)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert script.calls == 4  # failures at t = 0, 2, 4 and 6: 6 s >= 5 s stops
    assert [s for s in clock.sleeps if s > 0] == [2, 2, 2]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [
        RateLimited(7.5),
        HTTPError(429, {"Retry-After": "7.5"}),
        HTTPError(503, {"retry-after": "7.5"}),
    ],
    ids=["attribute", "header-429", "header-503"],
)
async def test_retry_after_is_waited_out(
    mode: str, error: Exception, name: str, clock: FakeClock
) -> None:
    """A Retry-After (attribute or header) is waited for at least that long."""
    script = Script(error, "ok")
    fn = retry(max_attempts=3, initial_delay=0.1, max_delay=1, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert max(clock.sleeps) >= 7.5


@pytest.mark.parametrize("mode", MODES)
async def test_retry_after_beyond_the_deadline_gives_up_now(
    mode: str, name: str, clock: FakeClock
) -> None:
    """If the server's Retry-After would end past the deadline, the original error is raised
    at once, without sleeping."""
    error = RateLimited(30)
    script = Script(error, "ok")
    fn = retry(max_attempts=3, deadline=10, name=name)(make(mode, script))
    with pytest.raises(RateLimited) as info:
        await invoke(fn)
    assert info.value is error
    assert [s for s in clock.sleeps if s > 0] == []
    assert script.calls == 1


@pytest.mark.parametrize("mode", MODES)
async def test_ambient_deadline_bounds_nested_retries(
    mode: str, name: str, clock: FakeClock
) -> None:
    """with resilient.deadline(s): no wait starts that cannot finish in time."""
    script = Script(*[ConnectionError("x")] * 50)
    fn = retry(max_attempts=50, initial_delay=1, max_delay=1, jitter=False, name=name)(
        make(mode, script)
    )
    start = clock.monotonic()
    with deadline(3.5), pytest.raises(ConnectionError):
        await invoke(fn)
    assert clock.monotonic() - start <= 3.5
    assert script.calls == 4  # t=0,1,2,3; a wait to t=4 would pass the deadline


def test_nested_deadline_never_extends_the_outer(clock: FakeClock) -> None:
    """An inner deadline longer than the outer one keeps the outer."""
    with deadline(2) as outer, deadline(10) as inner:
        assert inner == outer == pytest.approx(clock.monotonic() + 2)


@given(
    outcomes=st.lists(st.booleans(), max_size=12),
    max_attempts=st.integers(1, 6),
    limit=st.none() | st.floats(0.5, 20),
    delay=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
)
@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_attempts_and_time_are_bounded(
    outcomes: list[bool], max_attempts: int, limit: float | None, delay: float
) -> None:
    """For any failure sequence: attempts ≤ max_attempts, fake time ≤ the deadline, and the
    call succeeds exactly when a success falls within the attempts it may make."""
    clock = FakeClock()
    calls = 0

    def service() -> str:
        nonlocal calls
        calls += 1
        ok = outcomes[calls - 1] if calls <= len(outcomes) else True
        if not ok:
            raise ConnectionError("down")
        return "ok"

    fn = retry(
        max_attempts=max_attempts,
        initial_delay=delay,
        max_delay=max(delay, 4.0),
        deadline=limit,
        budget=False,
    )(service)
    with use_clock(clock):
        start = clock.monotonic()
        try:
            result: str | None = fn()
        except ConnectionError:
            result = None
        elapsed = clock.monotonic() - start
    assert 1 <= calls <= max_attempts
    if limit is not None:
        assert elapsed <= limit
    first_success = next((i + 1 for i, ok in enumerate(outcomes) if ok), len(outcomes) + 1)
    if result == "ok":
        assert calls == first_success
    else:
        assert calls < first_success


async def test_budget_bounds_amplification(name: str) -> None:
    """Under a total outage retries stay near 20 % of calls: ~1.2 calls per request."""
    calls = 0

    @retry(max_attempts=3, name=name)
    async def service() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("outage")

    requests = 5000
    with zero_wait_retries(), capture_events() as events:
        for _ in range(requests):
            with pytest.raises(ConnectionError):
                await service()
    ratio = calls / requests
    floor = get_retry_budget(name).min_per_second * 10 / requests
    assert 1.15 <= ratio <= 1.2 + floor + 0.01
    refused = get_retry_budget(name).snapshot().refused
    assert refused > 0
    assert sum(e.kind is EventKind.RETRY_BUDGET_EXHAUSTED for e in events) == refused


def test_budget_is_shared_per_name_and_can_be_turned_off(name: str) -> None:
    """budget=False retries every time; the budget object is one per name."""
    assert get_retry_budget(name) is get_retry_budget(name)
    script = Script(*[ConnectionError("x"), "ok"] * 200)
    fn = retry(max_attempts=2, budget=False, name=name)(script)
    with zero_wait_retries():
        for _ in range(200):
            assert fn() == "ok"  # a retry for every call: far beyond any budget
    assert script.calls == 400


@pytest.mark.parametrize("mode", MODES)
async def test_non_idempotent_retries_only_unsent_requests(mode: str, name: str) -> None:
    """idempotent=False: a refused connection (never sent) is retried, a reset one is not."""
    refused = Script(ConnectionRefusedError("refused"), "placed")
    fn = retry(max_attempts=3, idempotent=False, name=name)(make(mode, refused))
    assert await invoke(fn) == "placed"
    assert refused.calls == 2
    reset = Script(ConnectionResetError("reset"), "placed")
    fn2 = retry(max_attempts=3, idempotent=False, name=name)(make(mode, reset))
    with pytest.raises(ConnectionResetError):
        await invoke(fn2)
    assert reset.calls == 1


@pytest.mark.parametrize("mode", MODES)
async def test_idempotent_predicate_sees_the_arguments(mode: str, name: str) -> None:
    """idempotent=<predicate>: an order with an idempotency key may be retried."""
    script = Script(ConnectionResetError("reset"), "placed", ConnectionResetError("reset"))
    fn = retry(
        max_attempts=3,
        idempotent=lambda args, kwargs: kwargs.get("client_order_id") is not None,
        name=name,
    )(make(mode, script))
    assert await invoke(fn, "AAPL", client_order_id="abc-1") == "placed"
    with pytest.raises(ConnectionResetError):
        await invoke(fn, "AAPL")
    assert script.calls == 3


@pytest.mark.parametrize("mode", MODES)
async def test_zero_wait_never_calls_sleep(mode: str, name: str, clock: FakeClock) -> None:
    """A computed wait of zero skips the sleep call entirely."""
    script = Script(ConnectionError("a"), ConnectionError("b"))
    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert clock.sleeps == []  # not even sleep(0)


@pytest.mark.parametrize("mode", MODES)
async def test_zero_wait_retries_context(mode: str, name: str, clock: FakeClock) -> None:
    """zero_wait_retries(): no waiting even with delays configured, attempts capped."""
    script = Script(*[ConnectionError("x")] * 10)
    fn = retry(max_attempts=10, initial_delay=5, name=name)(make(mode, script))
    with zero_wait_retries(max_attempts=2), pytest.raises(ConnectionError):
        await invoke(fn)
    assert script.calls == 2
    assert [s for s in clock.sleeps if s > 0] == []


@pytest.mark.parametrize("mode", MODES)
async def test_switch_turns_retries_off(mode: str, name: str) -> None:
    """resilience.retry_enabled off: one attempt, the error as it is."""
    script = Script(ConnectionError("x"), "ok")
    fn = retry(max_attempts=3, name=name)(make(mode, script))
    switches.retry_enabled = False
    try:
        with pytest.raises(ConnectionError):
            await invoke(fn)
    finally:
        switches.retry_enabled = True
    assert script.calls == 1


@pytest.fixture
def reload_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reload_config()

    yield apply
    monkeypatch.undo()
    reload_config()


async def test_reload_changes_max_attempts(name: str, reload_with: Callable[..., None]) -> None:
    """max_attempts from settings follows a configuration reload."""
    script = Script(*[ConnectionError("x")] * 10)
    fn = retry(name=name)(script)
    reload_with(AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS="5")
    with zero_wait_retries(), pytest.raises(ConnectionError):
        fn()
    assert script.calls == 5


async def test_retry_events(name: str, clock: FakeClock) -> None:
    """Each scheduled retry is reported once with its attempt, wait and category; the final
    failure once as call_failed."""
    script = Script(*[ConnectionError("x")] * 3)
    fn = retry(max_attempts=3, initial_delay=1, max_delay=1, jitter=False, name=name)(script)
    with capture_events() as events, pytest.raises(ConnectionError):
        fn("secret-argument")
    retries = [e for e in events if e.kind is EventKind.RETRY]
    assert [(e.attempt, e.wait, e.category) for e in retries] == [
        (1, 1.0, "network"),
        (2, 1.0, "network"),
    ]
    failed = [e for e in events if e.kind is EventKind.CALL_FAILED]
    assert len(failed) == 1 and failed[0].attempt == 3 and failed[0].name == name
    assert all("secret-argument" not in repr(e) for e in events)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"initial_delay": -1}, "initial_delay"),
        ({"initial_delay": 5, "max_delay": 1}, "max_delay"),
        ({"retry_on": ["nope"]}, "retry_on"),
        ({"idempotent": "yes"}, "idempotent"),
    ],
)
def test_invalid_arguments_fail_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    """Bad arguments are refused when decorating, naming the argument."""
    with pytest.raises((ValueError, TypeError), match=message):
        retry(**kwargs)


def test_custom_strategy_sees_the_failed_attempt(name: str, clock: FakeClock) -> None:
    """A tenacity strategy may read retry_state.outcome and attempt_number, as in tenacity."""
    seen: list[tuple[int, str]] = []

    def wait_by_error(retry_state: Any) -> float:
        exc = retry_state.outcome.exception()
        seen.append((retry_state.attempt_number, type(exc).__name__))
        assert retry_state.outcome.failed
        return 2.0 if isinstance(exc, TimeoutError) else 0.5

    script = Script(TimeoutError("slow"), ConnectionError("reset"), "ok")
    fn = retry(wait=wait_by_error, max_attempts=3, name=name)(script)
    assert fn() == "ok"
    assert seen == [(1, "TimeoutError"), (2, "ConnectionError")]
    assert [s for s in clock.sleeps if s > 0] == [2.0, 0.5]


def test_budget_snapshots_are_listed(name: str) -> None:
    """retry_budgets() reports calls, retries and refusals per name."""
    from resilient._policies.retry import retry_budgets

    script = Script(ConnectionError("x"), "ok")
    fn = retry(max_attempts=2, name=name)(script)
    with zero_wait_retries():
        assert fn() == "ok"
    snap = next(b for b in retry_budgets() if b.name == name)
    assert (snap.calls, snap.retries, snap.refused) == (1, 1, 0)
    assert snap.ratio == pytest.approx(0.2)
    get_retry_budget(name).reset()
    assert get_retry_budget(name).snapshot().calls == 0


def test_deadline_accepts_timedelta(clock: FakeClock) -> None:
    """Durations may be timedeltas; negative ones are refused."""
    from datetime import timedelta

    with deadline(timedelta(seconds=1.5)) as at:
        assert at == pytest.approx(clock.monotonic() + 1.5)
    with pytest.raises(ValueError, match="deadline"), deadline(-1):
        pass
