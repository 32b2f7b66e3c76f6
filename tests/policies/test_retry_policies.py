"""@retry against hostile input: raising predicates and strategies, unbounded Retry-After,
cyclic chains, tenacity's clock, the retry budget's windows and the bare decorator."""

from __future__ import annotations

import io
import math
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import tenacity
from _policy_support import MODES, Script, invoke, make
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient import FakeClock, disable_logging, enable_logging, retry, use_clock
from resilient._policies.retry import BUDGET_TTL, RetryBudget, get_retry_budget
from resilient.config import reload_config


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


@pytest.fixture
def name() -> str:
    return f"rtp-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def reload_with(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reload_config()

    yield apply
    monkeypatch.undo()
    reload_config()


class RateLimited(Exception):
    def __init__(self, retry_after: object) -> None:
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


def _boom(*args: Any) -> Any:
    raise AttributeError("predicate bug password=hunter22")


# --- point 1: raising user callbacks -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"retry_on": _boom},
        {"retry_on": (KeyError, _boom)},
        {"idempotent": _boom},
        {"stop": _boom},
        {"wait": _boom},
    ],
    ids=["retry_on", "retry_on-tuple", "idempotent", "stop", "wait"],
)
async def test_raising_callback_gives_up_with_the_original_error(
    mode: str, kwargs: dict[str, Any], name: str
) -> None:
    """A retry_on/idempotent/stop/wait callback that raises is no match: no retry, the
    attempt's own error propagates (not the callback's)."""
    err = ConnectionError("down")
    script = Script(err, "ok")
    fn = retry(max_attempts=3, name=name, **kwargs)(make(mode, script))
    with pytest.raises(ConnectionError) as info:
        await invoke(fn)
    assert info.value is err
    assert script.calls == 1


def test_raising_retry_on_is_logged_once_sanitized(name: str) -> None:
    """The broken predicate is reported once, with a sanitized message."""
    sink = io.StringIO()

    def broken_retry_on(exc: BaseException) -> bool:
        raise AttributeError("predicate bug password=hunter22")

    enable_logging("DEBUG", json_lines=False, sink=sink)
    try:
        fn = retry(max_attempts=3, retry_on=broken_retry_on, name=name)(
            make("sync", Script(*[ConnectionError("x")] * 5))
        )
        for _ in range(3):
            with pytest.raises(ConnectionError):
                fn()
    finally:
        disable_logging()
    text = sink.getvalue()
    assert text.count("AttributeError") == 1, text
    assert "broken_retry_on" in text and "retry_on" in text
    assert "hunter22" not in text


class Hostile(Exception):
    """An exception whose every attribute read raises."""

    def __getattribute__(self, item: str) -> Any:
        if item in ("__class__", "__dict__", "__traceback__", "with_traceback", "args"):
            return object.__getattribute__(self, item)
        if item.startswith("__"):
            return object.__getattribute__(self, item)
        raise RuntimeError(f"no {item}")


@pytest.mark.parametrize("mode", MODES)
async def test_exception_with_raising_attributes_is_reraised(mode: str, name: str) -> None:
    """Classifying an exception whose attributes raise never replaces it."""
    err = Hostile("x")
    script = Script(err, "ok")
    fn = retry(max_attempts=3, name=name)(make(mode, script))
    with pytest.raises(Hostile) as info:
        await invoke(fn)
    assert info.value is err


# --- point 2: cyclic chains ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_cyclic_chain_is_classified_not_recursed(mode: str, name: str) -> None:
    """A wrapper whose cause chain loops back is decided by its known link (a
    ConnectionError: retried), without RecursionError."""
    outer = RuntimeError("wrapper")
    inner = RuntimeError("inner")
    conn = ConnectionError("refused")
    outer.__cause__ = inner
    inner.__cause__ = outer  # the loop
    inner.orig = conn  # type: ignore[attr-defined]
    script = Script(outer, "ok")
    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert script.calls == 2


# --- point 3: Retry-After without an upper bound -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "error",
    [
        RateLimited(1e10),
        RateLimited(math.inf),
        RateLimited(10**400),
        RateLimited(timedelta(days=3)),
        RateLimited("1e10"),
        HTTPError(429, {"Retry-After": "1e10"}),
        HTTPError(429, {"Retry-After": "inf"}),
        HTTPError(429, {"Retry-After": "9" * 5000}),
        HTTPError(503, {"Retry-After": "61"}),
        HTTPError(429, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}),
    ],
    ids=[
        "attr-1e10",
        "attr-inf",
        "attr-10**400",
        "attr-timedelta",
        "attr-str",
        "header-1e10",
        "header-inf",
        "header-5000-digits",
        "header-61",
        "header-date-9999",
    ],
)
async def test_retry_after_beyond_the_cap_gives_up_at_once(
    mode: str, error: Exception, name: str, clock: FakeClock
) -> None:
    """A server-requested wait above resilience.retry_max_retry_after (60 s) is not waited:
    the original error is raised at once, without sleeping or overflowing."""
    script = Script(error, "ok")
    fn = retry(max_attempts=3, initial_delay=0.1, max_delay=1, name=name)(make(mode, script))
    with pytest.raises(type(error)) as info:
        await invoke(fn)
    assert info.value is error
    assert script.calls == 1
    assert [s for s in clock.sleeps if s > 0] == []


@pytest.mark.parametrize("mode", MODES)
async def test_retry_after_within_the_cap_is_waited(mode: str, name: str, clock: FakeClock) -> None:
    """60 s exactly (the cap) is still waited out."""
    script = Script(HTTPError(429, {"Retry-After": "60"}), "ok")
    fn = retry(max_attempts=3, initial_delay=0.1, max_delay=1, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert max(clock.sleeps) == 60


async def test_retry_after_cap_follows_settings(
    name: str, clock: FakeClock, reload_with: Callable[..., None]
) -> None:
    """resilience.retry_max_retry_after is read from settings (and reloads)."""
    fn = retry(max_attempts=3, initial_delay=0.1, max_delay=1, name=name)(
        make("sync", Script(RateLimited(90), "ok", RateLimited(200)))
    )
    reload_with(AI_TRADER_RESILIENCE__RETRY_MAX_RETRY_AFTER="120")
    assert fn() == "ok"
    assert max(clock.sleeps) == 90
    with pytest.raises(RateLimited):
        fn()


@pytest.mark.parametrize("mode", MODES)
async def test_http_date_retry_after_is_waited(mode: str, name: str, clock: FakeClock) -> None:
    """An HTTP-date Retry-After 30 s ahead (on the wall clock) is waited about 30 s."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(clock.time() + 30, UTC)
    script = Script(HTTPError(503, {"Retry-After": format_datetime(when, usegmt=True)}), "ok")
    fn = retry(max_attempts=3, initial_delay=0.1, max_delay=1, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert 29 <= max(clock.sleeps) <= 31


# --- point 4: tenacity's clock starts before the first attempt ---------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_stop_after_delay_counts_from_the_first_attempt(
    mode: str, name: str, clock: FakeClock
) -> None:
    """As in tenacity: a 0.9 s first attempt leaves 0.1 s of stop_after_delay(1): a second
    attempt after a 0.5 s wait passes 1 s and stops (2 attempts, not 6)."""
    calls = []

    def slow_fail() -> None:
        calls.append(clock.monotonic())
        clock.advance(0.9 if len(calls) == 1 else 0.05)
        raise ConnectionError("x")

    fn = retry(wait=tenacity.wait_fixed(0.5), stop=tenacity.stop_after_delay(1), name=name)(
        make(mode, slow_fail)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert len(calls) == 2


def test_default_success_path_reads_no_clock(name: str) -> None:
    """Without user strategies or a deadline a successful call never reads the clock."""

    class Counting(FakeClock):
        reads = 0

        def monotonic(self) -> float:
            Counting.reads += 1
            return super().monotonic()

    fn = retry(max_attempts=3, name=name)(lambda: "ok")
    with use_clock(Counting()):
        for _ in range(5):
            assert fn() == "ok"
    assert Counting.reads == 0


# --- the retry budget's windows -------------------------------------------------------------


def test_budget_rotates_half_windows_and_forgets_idle_time(clock: FakeClock) -> None:
    """Counts move to the previous half after BUDGET_TTL/2 and are forgotten after a whole
    idle window."""
    budget = RetryBudget("b", ratio=0.5, min_per_second=0)
    budget.calls = 4
    assert budget.try_spend() and budget.try_spend()
    assert not budget.try_spend()  # 2 retries of 0.5 × 4 calls
    assert budget.snapshot().refused == 1
    clock.advance(4.999)  # the half window is 5 s (BUDGET_TTL 10 s): not yet rotated
    assert budget.snapshot().calls == 4 and not budget.try_spend()
    clock.advance(0.001)
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (4, 2)  # the previous half still counts
    assert not budget.try_spend()
    budget.calls += 2  # 6 calls over both halves allow 3
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.advance(BUDGET_TTL / 2 - 0.001)
    assert budget.snapshot().retries == 3
    clock.advance(10.0)  # a whole idle window: both halves forgotten
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (0, 0)


def test_budget_minimum_per_second(clock: FakeClock) -> None:
    """The floor is a reserve of one second's worth of retries (min_per_second tokens, here 3)
    with no calls at all, not one more; it refills at min_per_second a second, but not within
    BUDGET_TTL of a refused retry."""
    budget = RetryBudget("m", ratio=0.0, min_per_second=3)
    allowed = 0
    while budget.try_spend():
        allowed += 1
    assert allowed == 3
    clock.advance(BUDGET_TTL - 0.001)  # a refusal just happened: no refill yet
    assert not budget.try_spend()  # (and refused again: paused for another BUDGET_TTL)
    clock.advance(BUDGET_TTL + 1)  # refilling for the last second: full again
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]
    assert budget.snapshot().floor == 0
    clock.advance(BUDGET_TTL + 0.34)  # 0.34 s after the pause: 3 a second, one token
    assert [budget.try_spend() for _ in range(2)] == [True, False]
    budget.reset()
    assert budget.snapshot() == budget.snapshot()
    assert budget.snapshot().refused == 0 and budget.try_spend()


def test_total_outage_at_a_low_rate_stays_within_the_ratio(name: str, clock: FakeClock) -> None:
    """Default settings (ratio 0.2, floor 10), one process, 5 requests a second for a minute,
    every attempt failing: at most 1.3 attempts per request (the floor alone used to allow
    10 retries a second, every request retrying to max_attempts)."""
    attempts = 0

    def down() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("down")

    fn = retry(max_attempts=3, wait=tenacity.wait_none(), name=name)(down)
    requests = 300
    for _ in range(requests):
        with pytest.raises(ConnectionError):
            fn()
        clock.advance(0.2)
    assert 1.15 <= attempts / requests <= 1.3, attempts / requests


def test_the_floor_still_serves_sparse_calls_and_refills_after_an_outage(
    name: str, clock: FakeClock
) -> None:
    """A call now and then (too few for the ratio to allow one retry) is still retried; after
    an outage ends the floor is back once BUDGET_TTL passes without a refused retry."""
    script = Script(*[ConnectionError("x"), "ok"] * 3)
    fn = retry(max_attempts=2, wait=tenacity.wait_none(), name=name)(script)
    assert fn() == "ok"  # the first call of the window: 0.2 × 1 call allows no retry
    clock.advance(60)
    assert fn() == "ok"
    down = retry(max_attempts=3, wait=tenacity.wait_none(), name=name)(
        Script(*[ConnectionError("down")] * 1000)
    )
    for _ in range(40):  # an outage spends the floor and the ratio's share
        with pytest.raises(ConnectionError):
            down()
        clock.advance(0.1)
    assert get_retry_budget(name).snapshot().refused > 0
    clock.advance(BUDGET_TTL + 1)
    assert fn() == "ok"


# --- issue 14 point 10: bare decorator -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_bare_retry(mode: str) -> None:
    """@retry without parentheses retries with the settings' defaults."""
    script = Script(ConnectionError("a"), "ok")
    body = make(mode, script)
    fn = retry(body)
    assert await invoke(fn) == "ok"
    assert script.calls == 2
    assert fn.__name__ == body.__name__


# --- hypothesis: Retry-After parsing never overflows --------------------------------------------

_values = st.one_of(
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="0123456789.e+-infINFna ", max_size=40),
    st.from_regex(r"\A[0-9]{1,5000}\Z", fullmatch=True),
    st.datetimes().map(lambda d: format_datetime(d.replace(tzinfo=None), usegmt=False)),
    st.timedeltas(),
    st.binary(max_size=20),
    st.sampled_from(["Fri, 31 Dec 9999 23:59:59 GMT", "Mon, 01 Jan 0001 00:00:00 GMT", ""]),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values, as_header=st.booleans())
def test_retry_after_parsing_never_overflows(value: object, as_header: bool) -> None:
    """Any attribute or header value parses to None or a non-negative number (inf allowed),
    never raising."""
    from resilient.errors import retry_after

    if as_header:
        headers = {"Retry-After": value if isinstance(value, str | bytes) else str(value)}
        exc: Exception = HTTPError(429, headers)  # type: ignore[arg-type]
    else:
        exc = RateLimited(value)
    got = retry_after(exc)
    assert got is None or (got >= 0 and not math.isnan(got))


# --- decisions the mutation run asked about ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_user_strategies_see_outcome_attempt_and_idle_time(
    mode: str, name: str, clock: FakeClock
) -> None:
    """A user stop= sees a failed outcome (its exception, result() re-raising it), the
    attempt number and the seconds idled so far; wait= sees the same state."""
    seen: list[tuple[int, float, bool, str]] = []

    def stop(state: Any) -> bool:
        outcome = state.outcome
        assert outcome.failed and outcome.attempt_number == state.attempt_number
        with pytest.raises(ConnectionError):
            outcome.result()
        seen.append(
            (state.attempt_number, state.idle_for, outcome.failed, str(outcome.exception()))
        )
        return bool(state.idle_for >= 3)

    script = Script(*[ConnectionError(f"e{i}") for i in range(9)])
    fn = retry(wait=tenacity.wait_fixed(1.5), stop=stop, name=name)(make(mode, script))
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert seen == [(1, 0.0, True, "e0"), (2, 1.5, True, "e1"), (3, 3.0, True, "e2")]
    assert script.calls == 3
    assert [s for s in clock.sleeps if s > 0] == [1.5, 1.5]


async def test_seconds_since_start_reads_the_failure_time(name: str, clock: FakeClock) -> None:
    """seconds_since_start is the time from the call's start to the failed attempt's end."""
    got: list[float | None] = []

    def slow() -> None:
        clock.advance(0.25)
        raise ConnectionError("x")

    def stop(state: Any) -> bool:
        got.append(state.seconds_since_start)
        return True

    fn = retry(stop=stop, wait=tenacity.wait_fixed(1), name=name)(slow)
    with pytest.raises(ConnectionError):
        fn()
    assert got == [pytest.approx(0.25)]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"initial_delay": 2, "max_delay": 1}, "max_delay"),
        ({"retry_on": ()}, "retry_on is empty"),
        ({"idempotent": "yes"}, "idempotent"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict[str, Any], message: str) -> None:
    """Invalid retry arguments fail when decorating, naming the argument."""
    with pytest.raises((ValueError, TypeError), match=message):
        retry(**kwargs)


def test_max_attempts_one_and_equal_delays_are_allowed(name: str) -> None:
    """max_attempts=1 (no retry) and max_delay == initial_delay are valid."""
    script = Script(ConnectionError("x"), "ok")
    fn = retry(max_attempts=1, initial_delay=1, max_delay=1, name=name)(script)
    with pytest.raises(ConnectionError):
        fn()
    assert script.calls == 1


@pytest.mark.parametrize("mode", MODES)
async def test_zero_max_delay_never_sleeps(mode: str, name: str, clock: FakeClock) -> None:
    """max_delay=0 clamps every backoff to zero: no sleep at all."""
    script = Script(ConnectionError("a"), ConnectionError("b"), "ok")
    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, name=name)(make(mode, script))
    assert await invoke(fn) == "ok"
    assert [s for s in clock.sleeps if s > 0] == []


@pytest.mark.parametrize("mode", MODES)
async def test_backoff_without_jitter_is_exact(mode: str, name: str, clock: FakeClock) -> None:
    """jitter=False: waits are exactly initial × 2ⁿ, capped at max_delay."""
    script = Script(*[ConnectionError("x")] * 4, "ok")
    fn = retry(max_attempts=5, initial_delay=1, max_delay=3, jitter=False, name=name)(
        make(mode, script)
    )
    assert await invoke(fn) == "ok"
    assert [s for s in clock.sleeps if s > 0] == [1, 2, 3, 3]


def test_zero_wait_caps_attempts(name: str, clock: FakeClock) -> None:
    """zero_wait_retries(max_attempts=2) caps every retry at two attempts, without sleeping."""
    from resilient.testing import zero_wait_retries

    script = Script(*[ConnectionError("x")] * 5)
    fn = retry(max_attempts=5, name=name)(script)
    with zero_wait_retries(max_attempts=2), pytest.raises(ConnectionError):
        fn()
    assert script.calls == 2
    assert clock.sleeps == []


def test_retry_and_failure_events_carry_attempt_wait_and_elapsed(
    name: str, clock: FakeClock
) -> None:
    """Each retry event names the failed attempt, the wait and the elapsed time (from the
    first failure); the final failure is reported once with the last attempt."""
    from resilient import EventKind
    from resilient.testing import capture_events

    def fail() -> None:
        clock.advance(0.5)
        raise ConnectionError("x")

    fn = retry(max_attempts=3, initial_delay=1, max_delay=1, jitter=False, name=name)(fail)
    with capture_events() as events, pytest.raises(ConnectionError):
        fn()
    retries = [(e.attempt, e.wait, e.elapsed) for e in events if e.kind is EventKind.RETRY]
    # elapsed counts from the first failure (the default success path reads no clock)
    assert retries == [(1, 1.0, 0.0), (2, 1.0, pytest.approx(1.5))]
    failed = [(e.attempt, e.elapsed) for e in events if e.kind is EventKind.CALL_FAILED]
    assert failed == [(3, pytest.approx(3.0))]


def test_first_attempt_failure_event_and_never_retried_errors(name: str) -> None:
    """A permanent error fails at attempt 1 with elapsed 0; an open circuit or a risk refusal
    is never retried, even when retry_on says Exception, and an open circuit is not reported
    as a call failure."""
    from resilient import CircuitOpenError, EventKind, RiskLimitError
    from resilient.testing import capture_events

    with capture_events() as events:
        fn = retry(max_attempts=3, name=name)(Script(ValueError("bad")))
        with pytest.raises(ValueError):
            fn()
        for err in (CircuitOpenError("c"), RiskLimitError("r")):
            script = Script(err, "ok")
            with pytest.raises(type(err)):
                retry(max_attempts=3, retry_on=Exception, name=name)(script)()
            assert script.calls == 1
    failed = [(type(e.exception), e.attempt, e.elapsed) for e in events]
    assert (ValueError, 1, 0.0) in failed and (RiskLimitError, 1, 0.0) in failed
    assert all(e.kind is EventKind.CALL_FAILED for e in events)
    assert not any(isinstance(e.exception, CircuitOpenError) for e in events)


def test_budget_exhaustion_is_reported(name: str, clock: FakeClock) -> None:
    """When the retry budget is spent the error is raised at once with an event."""
    from resilient import EventKind
    from resilient._policies.retry import get_retry_budget
    from resilient.testing import capture_events

    budget = get_retry_budget(name)
    budget.ratio, budget.min_per_second = 0.0, 0.0
    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, name=name)(
        Script(ConnectionError("x"), "ok")
    )
    budget.ratio, budget.min_per_second = 0.0, 0.0
    with capture_events() as events, pytest.raises(ConnectionError):
        fn()
    kinds = [e.kind for e in events]
    assert EventKind.RETRY_BUDGET_EXHAUSTED in kinds and EventKind.RETRY not in kinds
    exhausted = next(e for e in events if e.kind is EventKind.RETRY_BUDGET_EXHAUSTED)
    assert exhausted.attempt == 1
    assert exhausted.elapsed == 0.0  # counted from the first failure, which just happened
    assert budget.snapshot().refused == 1


def test_retries_are_counted_by_attempt_and_class(name: str) -> None:
    """Every retry is counted under its name, failed attempt and exception class."""
    from resilient._core.events import retry_counts

    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, name=name)(
        Script(ConnectionError("a"), TimeoutError("b"), "ok")
    )
    assert fn() == "ok"
    counts = {k: v for k, v in retry_counts().items() if k[0] == name}
    assert counts == {(name, 1, ConnectionError): 1, (name, 2, TimeoutError): 1}


def test_retry_switch_gives_up_at_once(name: str, reload_with: Callable[..., None]) -> None:
    """resilience.retry_enabled = false: the first failure is raised."""
    script = Script(ConnectionError("x"), "ok")
    fn = retry(max_attempts=3, name=name)(script)
    reload_with(AI_TRADER_RESILIENCE__RETRY_ENABLED="false")
    with pytest.raises(ConnectionError):
        fn()
    assert script.calls == 1


def test_budget_settings_follow_a_reload(name: str, reload_with: Callable[..., None]) -> None:
    """The budget's ratio and minimum are re-read from settings on reload."""
    from resilient._policies.retry import get_retry_budget

    fn = retry(max_attempts=2, initial_delay=0, max_delay=0, name=name)(Script("ok"))
    reload_with(
        AI_TRADER_RESILIENCE__RETRY_BUDGET_RATIO="0.5",
        AI_TRADER_RESILIENCE__RETRY_BUDGET_MIN_PER_SECOND="0",
    )
    fn2 = retry(max_attempts=2, initial_delay=0, max_delay=0, name=name)(
        Script(ConnectionError("x"), "ok")
    )
    assert fn() == "ok"
    assert fn2() == "ok"
    budget = get_retry_budget(name)
    assert (budget.ratio, budget.min_per_second) == (0.5, 0.0)


@pytest.mark.parametrize("mode", MODES)
async def test_non_idempotent_call_retries_only_proven_unsent(mode: str, name: str) -> None:
    """idempotent=False: request_sent=False is proof of "never sent" (retried); a read
    timeout is not (raised at once)."""

    class Unsent(Exception):
        request_sent = False

        def __init__(self) -> None:
            super().__init__("connect failed")
            self.status_code = 503

    sent = Script(Unsent(), "ok")
    fn = retry(max_attempts=3, initial_delay=0, max_delay=0, idempotent=False, name=name)(
        make(mode, sent)
    )
    assert await invoke(fn) == "ok"
    timeout = Script(TimeoutError("read"), "ok")
    fn2 = retry(max_attempts=3, initial_delay=0, max_delay=0, idempotent=False, name=name)(
        make(mode, timeout)
    )
    with pytest.raises(TimeoutError):
        await invoke(fn2)
    assert timeout.calls == 1
    pred = Script(TimeoutError("read"), "ok")
    fn3 = retry(
        max_attempts=3,
        initial_delay=0,
        max_delay=0,
        idempotent=lambda args, kwargs: kwargs.get("key") is not None,
        name=name,
    )(make(mode, pred))
    assert await invoke(fn3, key="k1") == "ok"


@pytest.mark.parametrize("mode", MODES)
async def test_retry_on_type_retries_plain_builtins_too(mode: str, name: str) -> None:
    """retry_on=ValueError retries a plain ValueError (the type shortcut is only for the
    default rule)."""
    script = Script(ValueError("flaky parse"), "ok")
    fn = retry(max_attempts=2, initial_delay=0, max_delay=0, retry_on=ValueError, name=name)(
        make(mode, script)
    )
    assert await invoke(fn) == "ok"


@pytest.mark.parametrize("mode", MODES)
async def test_user_wait_is_kept_with_zero_max_delay(
    mode: str, name: str, clock: FakeClock
) -> None:
    """A user wait= strategy is used even when max_delay is 0 (that clamps only the built-in
    backoff)."""
    script = Script(ConnectionError("x"), "ok")
    fn = retry(max_attempts=2, max_delay=0, wait=tenacity.wait_fixed(2), name=name)(
        make(mode, script)
    )
    assert await invoke(fn) == "ok"
    assert [s for s in clock.sleeps if s > 0] == [2]


@pytest.mark.parametrize("mode", MODES)
async def test_own_deadline_counts_from_the_first_attempt(
    mode: str, name: str, clock: FakeClock
) -> None:
    """deadline= counts from before the first attempt; a wait ending exactly at it is not
    started, one ending before it is."""
    calls: list[float] = []

    def fail() -> None:
        calls.append(clock.monotonic())
        raise ConnectionError("x")

    fn = retry(max_attempts=5, initial_delay=1, max_delay=1, jitter=False, deadline=2, name=name)(
        make(mode, fail)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn)
    assert len(calls) == 2  # t=0, t=1; a wait to t=2 would end at the deadline

    calls.clear()

    def slow_first() -> None:
        calls.append(clock.monotonic())
        clock.advance(1.5 if len(calls) == 1 else 0)
        raise ConnectionError("x")

    fn2 = retry(max_attempts=5, initial_delay=1, max_delay=1, jitter=False, deadline=2, name=name)(
        make(mode, slow_first)
    )
    with pytest.raises(ConnectionError):
        await invoke(fn2)
    assert len(calls) == 1  # failed at 1.5 s: a 1 s wait would pass the 2 s deadline


async def test_default_backoff_has_jitter(name: str, clock: FakeClock) -> None:
    """By default waits carry jitter: they are not the bare exponential series."""
    script = Script(*[ConnectionError("x")] * 3, "ok")
    fn = retry(max_attempts=4, initial_delay=1, max_delay=100, name=name)(script)
    assert fn() == "ok"
    waits = [s for s in clock.sleeps if s > 0]
    assert len(waits) == 3 and waits != [1, 2, 4]
    assert all(base <= w <= base + 1 for base, w in zip([1, 2, 4], waits, strict=True))


def test_nested_retries_report_one_final_failure(name: str) -> None:
    """Only the outermost policy reports the call's failure."""
    from resilient import EventKind
    from resilient.testing import capture_events

    inner = retry(max_attempts=1, name=name + "-inner")(Script(ValueError("bad")))
    outer = retry(max_attempts=1, name=name)(inner)
    with capture_events() as events, pytest.raises(ValueError):
        outer()
    failed = [e.name for e in events if e.kind is EventKind.CALL_FAILED]
    assert failed == [name]


def test_budget_halves_rotate_exactly_every_five_seconds(clock: FakeClock) -> None:
    """The window is two 5 s halves: at exactly 5 s the counts move to the previous half, at
    exactly 10 s of silence everything is forgotten."""
    budget = RetryBudget("halves", ratio=0.5, min_per_second=0)
    budget.calls = 4
    assert budget.try_spend() and budget.try_spend()
    clock.advance(5.0)
    assert (budget.snapshot().calls, budget.snapshot().retries) == (4, 2)
    budget.calls += 2
    assert budget.try_spend()
    clock.advance(5.0)  # the second half becomes the previous one; the first is dropped
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (2, 1)
    budget.calls += 2
    assert budget.try_spend()
    clock.advance(10.0)  # exactly a whole window since the last rotation: both halves go
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (0, 0)


def test_first_decoration_reads_settings_before_any_load(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry decorated before configuration was ever (re)loaded still takes its attempts
    from settings."""
    from resilient.config import switches
    from resilient.testing import zero_wait_retries

    monkeypatch.setattr(switches, "generation", 0)
    script = Script(ConnectionError("a"), ConnectionError("b"), "ok")
    fn = retry(name=name)(script)
    with zero_wait_retries():
        assert fn() == "ok"
    assert script.calls == 3


def test_innermost_zero_wait_cap_wins(name: str) -> None:
    """Nested zero_wait_retries blocks: the innermost cap applies."""
    from resilient.testing import zero_wait_retries

    script = Script(*[ConnectionError("x")] * 5)
    fn = retry(max_attempts=5, name=name)(script)
    with (
        zero_wait_retries(max_attempts=4),
        zero_wait_retries(max_attempts=2),
        pytest.raises(ConnectionError),
    ):
        fn()
    assert script.calls == 2


def test_retry_refuses_a_non_callable() -> None:
    """retry()(42) fails at decoration."""
    with pytest.raises(TypeError, match="callable"):
        retry()(42)  # type: ignore[arg-type]
