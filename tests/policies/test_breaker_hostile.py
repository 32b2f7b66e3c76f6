"""@breaker against hostile input: raising predicates and listeners, cyclic exception chains,
exact boundaries, and the pybreaker semantics a ``Breaker`` promises."""

from __future__ import annotations

import contextlib
import gc
import io
import uuid
from collections.abc import Iterator
from typing import Any

import pybreaker
import pytest
from _policy_support import MODES, Script, invoke, make

from resilient import (
    CircuitOpenError,
    EventKind,
    FakeClock,
    breaker,
    breakers,
    disable_logging,
    enable_logging,
    get_breaker,
)


@pytest.fixture
def name() -> str:
    return f"cbh-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


class StatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"status {status}")
        self.status = status


def _cycle() -> RuntimeError:
    a = RuntimeError("a")
    b = RuntimeError("b")
    a.__cause__ = b
    b.__cause__ = a
    return a


# --- point 1: user callbacks that raise ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_raising_exclude_keeps_the_callers_error_and_the_permit(
    mode: str, name: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """An exclude= predicate that raises (``e.status`` on a ConnectionError) is no match: the
    caller gets its own ConnectionError, the half-open permit is given back and a healthy
    service closes the circuit again."""
    err = ConnectionError("down")
    script = Script(err, err, err, "ok")
    fn = breaker(
        name,
        failure_threshold=1,
        reset_timeout=5,
        exclude=lambda e: e.status == 422,  # type: ignore[attr-defined]
    )(make(mode, script))
    with pytest.raises(ConnectionError) as first:
        await invoke(fn)
    assert first.value is err
    assert get_breaker(name).state == "open"
    clock.advance(5)
    with pytest.raises(ConnectionError) as trial:  # the trial fails, predicate raises again
        await invoke(fn)
    assert trial.value is err
    assert get_breaker(name).state == "open"
    clock.advance(5)
    with pytest.raises(ConnectionError):
        await invoke(fn)
    clock.advance(5)
    assert await invoke(fn) == "ok"
    assert get_breaker(name).state == "closed"


def test_raising_exclude_is_logged_once_sanitized(name: str) -> None:
    """The failing predicate is reported once (class and sanitized message), not per call."""
    sink = io.StringIO()
    enable_logging("DEBUG", json_lines=False, sink=sink)
    try:

        def broken(exc: BaseException) -> bool:
            raise KeyError("password=hunter22")

        fn = breaker(name, failure_threshold=100, exclude=broken)(
            make("sync", Script(*[ConnectionError("x")] * 3))
        )
        for _ in range(3):
            with pytest.raises(ConnectionError):
                fn()
    finally:
        disable_logging()
    text = sink.getvalue()
    assert text.count("KeyError") == 1, text
    assert "exclude" in text and "broken" in text
    assert "hunter22" not in text
    assert get_breaker(name).snapshot().failure_count == 3


def test_raising_pybreaker_exclusion_and_listener_do_not_leak(name: str, clock: FakeClock) -> None:
    """pybreaker's own callable exclusions and listeners that raise are no match / ignored:
    the original error propagates and the half-open permit is released."""

    class Broken(pybreaker.CircuitBreakerListener):
        def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
            raise RuntimeError("listener bug")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            raise RuntimeError("listener bug")

    script = Script(*[ConnectionError("x")] * 3)
    fn = breaker(name, failure_threshold=1, reset_timeout=1)(make("sync", script))
    cb = get_breaker(name)
    cb.add_excluded_exception(lambda e: e.code == 1)  # type: ignore[arg-type, attr-defined]
    cb.add_listener(Broken())
    with pytest.raises(ConnectionError):
        fn()
    assert cb.state == "open"
    clock.advance(1)
    with pytest.raises(ConnectionError):
        fn()
    assert cb.state == "open"
    clock.advance(1)
    with pytest.raises(ConnectionError):
        fn()
    clock.advance(1)
    assert fn() == "ok"
    assert cb.state == "closed"


@pytest.mark.parametrize("mode", MODES)
async def test_raising_hook_on_transition_keeps_state(mode: str, name: str) -> None:
    """A policy hook that raises on a breaker transition changes nothing."""
    from resilient import add_hook

    def bad(event: Any) -> None:
        raise ValueError("hook bug")

    remove = add_hook(bad, kinds=[EventKind.BREAKER_STATE])
    try:
        script = Script(ConnectionError("x"))
        fn = breaker(name, failure_threshold=1)(make(mode, script))
        with pytest.raises(ConnectionError):
            await invoke(fn)
        assert get_breaker(name).state == "open"
    finally:
        remove()


# --- point 2: cyclic exception chains ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_cyclic_cause_chain_in_half_open(mode: str, name: str, clock: FakeClock) -> None:
    """A cyclic __cause__ chain is classified, re-raised as it is, and the trial permit is
    released."""
    err = _cycle()
    odd = RuntimeError("orig loop")
    odd.orig = odd  # type: ignore[attr-defined]
    script = Script(err, err, odd, "ok")
    fn = breaker(name, failure_threshold=1, reset_timeout=1)(make(mode, script))
    with pytest.raises(RuntimeError):
        await invoke(fn)
    clock.advance(1)
    with pytest.raises(RuntimeError) as info:
        await invoke(fn)
    assert info.value is err
    clock.advance(1)
    with pytest.raises(RuntimeError):
        await invoke(fn)
    clock.advance(1)
    assert await invoke(fn) == "ok"
    assert get_breaker(name).state == "closed"


# --- point 4: boundaries ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_call_exactly_at_slow_duration_is_not_slow(
    mode: str, name: str, clock: FakeClock
) -> None:
    """A call lasting exactly slow_call_duration is not slow (Resilience4j: strictly slower)."""

    def exact() -> str:
        clock.advance(1.0)
        return "done"

    fn = breaker(
        name, slow_call_duration=1.0, slow_call_rate_threshold=0.5, window_size=4, minimum_calls=4
    )(make(mode, exact))
    for _ in range(8):
        assert await invoke(fn) == "done"
    assert get_breaker(name).state == "closed"


@pytest.mark.parametrize("mode", MODES)
async def test_failure_exactly_at_slow_duration_is_not_slow(
    mode: str, name: str, clock: FakeClock
) -> None:
    """The same strict boundary holds for failed calls."""

    def exact() -> str:
        clock.advance(1.0)
        raise KeyError("business")

    fn = breaker(
        name,
        slow_call_duration=1.0,
        slow_call_rate_threshold=0.5,
        window_size=4,
        minimum_calls=4,
        exclude=KeyError,
    )(make(mode, exact))
    for _ in range(8):
        with pytest.raises(KeyError):
            await invoke(fn)
    assert get_breaker(name).state == "closed"


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"failure_rate_threshold": 0.5, "window_size": 10, "minimum_calls": 11}, "minimum_calls"),
        ({"slow_call_duration": 1, "window_size": 5, "minimum_calls": 6}, "window_size"),
    ],
)
def test_minimum_calls_above_count_window_is_refused(
    name: str, options: dict[str, Any], needle: str
) -> None:
    """minimum_calls > window_size with a count window could never trip: refused at decoration."""
    with pytest.raises(ValueError, match=needle) as info:
        breaker(name, **options)
    assert "minimum_calls" in str(info.value) and "window_size" in str(info.value)
    assert name not in breakers


def test_minimum_calls_may_exceed_a_time_window(name: str) -> None:
    """A time window holds any number of calls: minimum_calls above its seconds is fine."""
    breaker(name, failure_rate_threshold=0.5, window_type="time", window_size=10, minimum_calls=50)
    assert get_breaker(name).minimum_calls == 50


# --- point 5: a Breaker is a pybreaker.CircuitBreaker -------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_rejection_is_a_pybreaker_error(mode: str, name: str) -> None:
    """Code written for pybreaker catches our rejections."""
    fn = breaker(name, failure_threshold=1)(make(mode, Script(ConnectionError("x"))))
    with pytest.raises(ConnectionError):
        await invoke(fn)
    with pytest.raises(pybreaker.CircuitBreakerError) as info:
        await invoke(fn)
    assert isinstance(info.value, CircuitOpenError)
    assert issubclass(CircuitOpenError, pybreaker.CircuitBreakerError)


def test_removing_every_listener_keeps_the_breaker_working(name: str) -> None:
    """Removing all listeners pybreaker reports cannot remove the breaker's own bookkeeping."""
    fn = breaker(name, failure_threshold=1)(make("sync", Script(ConnectionError("x"))))
    cb = get_breaker(name)
    assert cb.listeners == ()
    for listener in list(cb.listeners):
        cb.remove_listener(listener)
    with pytest.raises(ValueError):
        cb.remove_listener(pybreaker.CircuitBreakerListener())
    with pytest.raises(ConnectionError):
        fn()
    assert cb.state == "open" and cb.current_state == "open"
    with pytest.raises(CircuitOpenError):
        fn()


class Recorder(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.out: list[str] = []

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self.out.append(f"before{args}")

    def success(self, cb: Any) -> None:
        self.out.append("success")

    def failure(self, cb: Any, exc: BaseException) -> None:
        self.out.append("failure")


@pytest.mark.parametrize("mode", MODES)
async def test_before_call_fires(mode: str, name: str) -> None:
    """Listeners see before_call, then success or failure, for decorated calls too."""
    fn = breaker(name)(make(mode, Script("ok", ConnectionError("x"))))
    cb = get_breaker(name)
    rec = Recorder()
    cb.add_listener(rec)
    assert await invoke(fn, 1) == "ok"
    with pytest.raises(ConnectionError):
        await invoke(fn, 2)
    assert rec.out == ["before(1,)", "success", "before(2,)", "failure"]
    cb.remove_listener(rec)
    assert await invoke(fn, 3) == "ok"
    assert rec.out[-1] == "failure"


def test_generator_results_are_followed(name: str) -> None:
    """As in pybreaker, a generator's outcome counts when it finishes, not when it is made."""
    cb = get_breaker(name, failure_threshold=5)

    def failing(value: int) -> Iterator[int]:
        got = yield value
        raise NotImplementedError(got)

    def fine(value: int) -> Iterator[int]:
        yield value

    gen = cb.call(failing, 1)
    assert cb.fail_counter == 0
    assert next(gen) == 1
    with pytest.raises(NotImplementedError):
        gen.send(2)
    assert cb.fail_counter == 1
    ok = cb(fine)(7)
    assert next(ok) == 7
    assert cb.fail_counter == 1
    with pytest.raises(StopIteration):
        next(ok)
    assert cb.fail_counter == 0


def test_generator_permit_released_when_abandoned(name: str, clock: FakeClock) -> None:
    """A half-open trial generator that is closed unfinished gives its permit back."""
    cb = get_breaker(name, failure_threshold=1, reset_timeout=1)
    with contextlib.suppress(ConnectionError):
        cb.call(Script(ConnectionError("x")))
    clock.advance(1)

    def gen() -> Iterator[int]:
        yield 1
        yield 2

    g = cb.call(gen)
    assert next(g) == 1
    g.close()
    assert cb.call(lambda: "ok") == "ok"
    assert cb.state == "closed"


@pytest.mark.parametrize("how", ["call", "calling", "call_async"])
async def test_disable_is_honoured_by_the_pybreaker_api(how: str, name: str) -> None:
    """breakers.disable(name) lets call(), calling() and call_async() through uncounted."""
    cb = get_breaker(name, failure_threshold=1)
    cb.force_open()
    breakers.disable(name)
    ran: list[int] = []

    async def work() -> str:
        ran.append(1)
        return "ok"

    if how == "call":
        assert cb.call(lambda: ran.append(1) or "ok") == "ok"
    elif how == "calling":
        with cb.calling():
            ran.append(1)
    else:
        assert await cb.call_async(work) == "ok"
    assert ran == [1]
    breakers.enable(name)
    with pytest.raises(CircuitOpenError):
        cb.call(lambda: "ok")


# --- issue 14 point 10: bare decorator -------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_bare_breaker_is_named_after_the_function(mode: str) -> None:
    """@breaker without parentheses guards the function with a breaker named after its
    qualified name."""

    if mode == "sync":

        @breaker
        def quote() -> str:
            return "q"

    else:

        @breaker  # type: ignore[no-redef]
        async def quote() -> str:
            return "q"

    assert await invoke(quote) == "q"
    expected = f"{quote.__module__}.{quote.__qualname__}"
    assert quote.breaker is get_breaker(expected)  # type: ignore[attr-defined]
    assert get_breaker(expected).snapshot().success_count == 1


def test_a_new_callback_reusing_a_freed_ones_id_is_reported_too(name: str) -> None:
    """ "Logged once" is per callback object, not per ``id``: callbacks made and dropped one after
    another (the same id, often) are each reported."""
    sink = io.StringIO()
    enable_logging("DEBUG", json_lines=False, sink=sink)
    try:
        for i in range(5):

            def broken(exc: BaseException) -> bool:
                raise KeyError("bug")

            fn = breaker(f"{name}-{i}", failure_threshold=100, exclude=broken)(
                make("sync", Script(ConnectionError("x")))
            )
            with pytest.raises(ConnectionError):
                fn()
            del fn, broken
            gc.collect()
    finally:
        disable_logging()
    assert sink.getvalue().count("KeyError") == 5
