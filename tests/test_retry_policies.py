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
from resilient._retry import BUDGET_TTL, RetryBudget
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
    clock.advance(BUDGET_TTL / 2)
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (4, 2)  # the previous half still counts
    assert not budget.try_spend()
    budget.calls += 2  # 6 calls over both halves allow 3
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.advance(BUDGET_TTL / 2 - 0.001)
    assert budget.snapshot().retries == 3
    clock.advance(BUDGET_TTL)  # a whole idle window: both halves forgotten
    snap = budget.snapshot()
    assert (snap.calls, snap.retries) == (0, 0)


def test_budget_minimum_per_second(clock: FakeClock) -> None:
    """min_per_second × TTL retries are allowed with no calls at all, not one more."""
    budget = RetryBudget("m", ratio=0.0, min_per_second=0.3)
    allowed = 0
    while budget.try_spend():
        allowed += 1
    assert allowed == 3
    budget.reset()
    assert budget.snapshot() == budget.snapshot()
    assert budget.snapshot().refused == 0 and budget.try_spend()


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
    from resilient._classify import retry_after

    if as_header:
        headers = {"Retry-After": value if isinstance(value, str | bytes) else str(value)}
        exc: Exception = HTTPError(429, headers)  # type: ignore[arg-type]
    else:
        exc = RateLimited(value)
    got = retry_after(exc)
    assert got is None or (got >= 0 and not math.isnan(got))
