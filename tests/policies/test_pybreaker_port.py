"""pybreaker's own test suite (danielfm/pybreaker, tests/pybreaker_test.py), ported to our
``Breaker``: a ``Breaker`` behaves as a ``pybreaker.CircuitBreaker``.

The port keeps each upstream test's scenario and assertions. Where they differ, it is one of the
README's documented differences, marked ``DIFFERENCE`` below:

1. The call that trips the circuit raises its own error (pybreaker's default
   ``throw_new_error_on_trip=True`` raises ``CircuitBreakerError`` for it).
2. Calls rejected by an open circuit raise ``CircuitOpenError``, a subclass of
   ``pybreaker.CircuitBreakerError`` (so every upstream ``pytest.raises(CircuitBreakerError)``
   holds unchanged).

Not ported, because our breaker has no such seam: the constructor (a breaker is made by name,
with thresholds as options), pybreaker's storage classes (memory and ``CircuitRedisStorage``;
shared state is ``shared=True``, tested in ``test_shared_state.py``) and tornado coroutines
(``call_async`` is asyncio). Time is the fake clock, so ``sleep(s)`` is ``clock.advance(s)``.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from time import sleep
from types import MethodType
from typing import Any
from unittest import mock

import pytest
from pybreaker import (
    STATE_CLOSED,
    STATE_HALF_OPEN,
    STATE_OPEN,
    CircuitBreakerError,
    CircuitBreakerListener,
)

from resilient import CircuitOpenError, FakeClock, breakers, get_breaker
from resilient._policies.breaker import Breaker
from resilient.config import current_config


@pytest.fixture(autouse=True)
def clock(fake_clock: FakeClock) -> FakeClock:
    return fake_clock


def CircuitBreaker(
    fail_max: int | None = None,
    reset_timeout: float | None = None,
    success_threshold: int | None = None,
    exclude: list[Any] | None = None,
    listeners: tuple[CircuitBreakerListener, ...] | None = None,
    name: str | None = None,
) -> Breaker:
    """Our breaker with pybreaker's constructor arguments (a fresh name each time)."""
    cb = get_breaker(
        f"port-{uuid.uuid4().hex[:10]}",
        failure_threshold=fail_max,
        reset_timeout=reset_timeout,
        success_threshold=success_threshold,
    )
    if exclude:
        cb.add_excluded_exceptions(*exclude)
    if listeners:
        cb.add_listeners(*listeners)
    if name is not None:
        cb.name = name
    return cb


@pytest.fixture
def cb() -> Breaker:
    return CircuitBreaker()


def err() -> None:
    raise NotImplementedError


def suc() -> bool:
    return True


# --- CircuitBreakerStorageBasedTestCase (memory storage) ---------------------------------------


def test_successful_call(cb: Breaker) -> None:
    """It should keep the circuit closed after a successful call."""
    assert cb.call(suc)
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def test_one_failed_call(cb: Breaker) -> None:
    """It should keep the circuit closed after a few failures."""
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1
    assert cb.current_state == "closed"


def test_one_successful_call_after_failed_call(cb: Breaker) -> None:
    """It should keep the circuit closed after few mixed outcomes."""
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1
    assert cb.call(suc)
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def test_several_failed_calls() -> None:
    """It should open the circuit after many failures."""
    cb = CircuitBreaker(fail_max=3)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1: the tripping call's own error
        cb.call(err)
    assert cb.fail_counter == 3
    assert cb.current_state == "open"
    with pytest.raises(CircuitBreakerError):  # rejected (DIFFERENCE 2: a CircuitOpenError)
        cb.call(err)
    assert cb.fail_counter == 3
    assert cb.current_state == "open"


def test_rejection_traceback_and_type() -> None:
    """A rejection is a CircuitBreakerError (and our CircuitOpenError), with a traceback."""
    cb = CircuitBreaker(fail_max=3)
    for _ in range(3):
        with pytest.raises(NotImplementedError):
            cb.call(err)
    with pytest.raises(CircuitBreakerError) as info:
        cb.call(err)
    assert isinstance(info.value, CircuitOpenError)
    assert "CircuitOpenError" in "".join(traceback.format_exception(info.value))
    assert cb.fail_counter == 3
    assert cb.current_state == "open"


def test_failed_call_after_timeout(clock: FakeClock) -> None:
    """It should half-open the circuit after timeout."""
    cb = CircuitBreaker(fail_max=3, reset_timeout=0.5)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.current_state == "closed"
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1
        cb.call(err)
    assert cb.fail_counter == 3
    clock.advance(0.6)
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1: the failed trial re-opens it
        cb.call(err)
    assert cb.fail_counter == 4
    assert cb.current_state == "open"


def test_successful_after_timeout(clock: FakeClock) -> None:
    """It should close the circuit when a call succeeds after timeout; the successful function
    is called once."""
    cb = CircuitBreaker(fail_max=3, reset_timeout=1)
    ok = mock.MagicMock(return_value=True)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.current_state == "closed"
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1
        cb.call(err)
    with pytest.raises(CircuitBreakerError):
        cb.call(ok)
    assert cb.fail_counter == 3
    clock.advance(2)
    assert cb.call(ok)
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"
    assert ok.call_count == 1


def test_failed_call_when_halfopen(cb: Breaker) -> None:
    """It should open the circuit when a call fails in half-open state."""
    cb.half_open()
    assert cb.fail_counter == 0
    assert cb.current_state == "half-open"
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1
        cb.call(err)
    assert cb.fail_counter == 1
    assert cb.current_state == "open"


def test_successful_call_when_halfopen(cb: Breaker) -> None:
    """It should close the circuit when a call succeeds in half-open state."""
    cb.half_open()
    assert cb.fail_counter == 0
    assert cb.current_state == "half-open"
    assert cb.call(suc)
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def test_close() -> None:
    """It should allow the circuit to be closed manually."""
    cb = CircuitBreaker(fail_max=3)
    for _ in range(3):
        with pytest.raises(NotImplementedError):  # the third: DIFFERENCE 1
            cb.call(err)
    with pytest.raises(CircuitBreakerError):
        cb.call(err)
    assert cb.fail_counter == 3
    assert cb.current_state == "open"
    cb.close()
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def test_transition_events() -> None:
    """It should call the appropriate functions on every state transition."""

    class Listener(CircuitBreakerListener):
        def __init__(self) -> None:
            self.out = ""

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            assert cb
            if old_state:
                self.out += old_state.name
            if new_state:
                self.out += "->" + new_state.name
            self.out += ","

    listener = Listener()
    cb = CircuitBreaker(listeners=(listener,))
    assert cb.current_state == "closed"
    cb.open()
    assert cb.current_state == "open"
    cb.half_open()
    assert cb.current_state == "half-open"
    cb.close()
    assert cb.current_state == "closed"
    assert listener.out == "closed->open,open->half-open,half-open->closed,"


def test_call_events() -> None:
    """It should call the appropriate functions on every successful/failed call."""

    class Listener(CircuitBreakerListener):
        def __init__(self) -> None:
            self.out = ""

        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            assert cb
            self.out += "-"

        def success(self, cb: Any) -> None:
            assert cb
            self.out += "success"

        def failure(self, cb: Any, exc: BaseException) -> None:
            assert cb
            assert exc
            self.out += "failure"

    listener = Listener()
    cb = CircuitBreaker(listeners=(listener,))
    assert cb.call(suc)
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert listener.out == "-success-failure"


def test_generator(cb: Breaker) -> None:
    """It should inspect generator values."""

    @cb
    def gen_suc(value: Any) -> Iterator[Any]:
        "Docstring"
        yield value

    @cb
    def gen_err(value: Any) -> Iterator[Any]:
        "Docstring"
        x = yield value
        raise NotImplementedError(x)

    s = gen_suc(True)
    e = gen_err(True)
    next(e)
    with pytest.raises(NotImplementedError):
        e.send(True)
    assert cb.fail_counter == 1
    assert next(s)
    with pytest.raises((StopIteration, RuntimeError)):
        next(s)
    assert cb.fail_counter == 0


def test_contextmanager(cb: Breaker) -> None:
    """It should catch in a with statement."""

    class Foo:
        @contextmanager
        @cb
        def wrapper(self) -> Iterator[None]:
            try:
                yield
            except NotImplementedError as exc:
                raise ValueError from exc

        def foo(self) -> None:
            with self.wrapper():
                raise NotImplementedError

    with pytest.raises(ValueError):
        Foo().foo()
    assert cb.fail_counter == 1


# --- CircuitBreakerConfigurationTestCase -------------------------------------------------------


def test_default_params(cb: Breaker) -> None:
    """It should define smart defaults (ours come from settings)."""
    res = current_config().resilience
    assert cb.fail_counter == 0
    assert cb.reset_timeout == res.circuit_breaker_timeout
    assert cb.fail_max == res.circuit_breaker_failure_threshold
    assert cb.current_state == "closed"
    assert cb.excluded_exceptions == ()
    assert cb.listeners == ()


def test_new_with_custom_reset_timeout() -> None:
    """It should support a custom reset timeout value."""
    cb = CircuitBreaker(reset_timeout=30)
    assert cb.fail_counter == 0
    assert cb.reset_timeout == 30
    assert cb.excluded_exceptions == ()
    assert cb.listeners == ()


def test_new_with_custom_fail_max() -> None:
    """It should support a custom maximum number of failures."""
    cb = CircuitBreaker(fail_max=10)
    assert cb.fail_counter == 0
    assert cb.fail_max == 10
    assert cb.excluded_exceptions == ()
    assert cb.listeners == ()


def test_new_with_custom_excluded_exceptions() -> None:
    """It should support a custom list of excluded exceptions."""
    cb = CircuitBreaker(exclude=[Exception])
    assert cb.fail_counter == 0
    assert (Exception,) == cb.excluded_exceptions
    assert cb.listeners == ()


def test_fail_max_setter() -> None:
    """It should allow the user to set a new value for 'fail_max'."""
    cb = CircuitBreaker(fail_max=5)
    assert cb.fail_max == 5
    cb.fail_max = 10
    assert cb.fail_max == 10


def test_reset_timeout_setter() -> None:
    """It should allow the user to set a new value for 'reset_timeout'."""
    cb = CircuitBreaker(reset_timeout=60)
    assert cb.reset_timeout == 60
    cb.reset_timeout = 30
    assert cb.reset_timeout == 30


def test_call_with_no_args(cb: Breaker) -> None:
    """It should be able to invoke functions with no-args."""
    assert cb.call(suc)


def test_call_with_args(cb: Breaker) -> None:
    """It should be able to invoke functions with args."""

    def func(arg1: Any, arg2: Any) -> list[Any]:
        return [arg1, arg2]

    assert cb.call(func, 42, "abc") == [42, "abc"]


def test_call_with_kwargs(cb: Breaker) -> None:
    """It should be able to invoke functions with kwargs."""

    def func(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert cb.call(func, a=1, b=2) == {"a": 1, "b": 2}


async def test_call_async_with_args_and_kwargs(cb: Breaker) -> None:
    """It should be able to invoke async functions with no args, args and kwargs."""

    async def none() -> bool:
        return True

    async def args(arg1: Any, arg2: Any) -> list[Any]:
        return [arg1, arg2]

    async def kwargs(**kw: Any) -> dict[str, Any]:
        return kw

    assert await cb.call_async(none)
    assert await cb.call_async(args, 42, "abc") == [42, "abc"]
    assert await cb.call_async(kwargs, a=1, b=2) == {"a": 1, "b": 2}


def test_add_listener(cb: Breaker) -> None:
    """It should allow the user to add a listener at a later time."""
    assert cb.listeners == ()
    first = CircuitBreakerListener()
    cb.add_listener(first)
    assert (first,) == cb.listeners
    second = CircuitBreakerListener()
    cb.add_listener(second)
    assert (first, second) == cb.listeners


def test_add_listeners(cb: Breaker) -> None:
    """It should allow the user to add listeners at a later time."""
    first, second = CircuitBreakerListener(), CircuitBreakerListener()
    cb.add_listeners(first, second)
    assert (first, second) == cb.listeners


def test_remove_listener(cb: Breaker) -> None:
    """It should allow the user to remove a listener."""
    first = CircuitBreakerListener()
    cb.add_listener(first)
    assert (first,) == cb.listeners
    cb.remove_listener(first)
    assert cb.listeners == ()


def test_excluded_exceptions() -> None:
    """It should ignore specific exceptions."""
    cb = CircuitBreaker(exclude=[LookupError])

    def err_2() -> None:
        raise LookupError

    def err_3() -> None:
        raise KeyError

    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1
    with pytest.raises(LookupError):
        cb.call(err_2)
    assert cb.fail_counter == 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1
    with pytest.raises(KeyError):  # a subclass of LookupError
        cb.call(err_3)
    assert cb.fail_counter == 0


class _ValueError(Exception):
    def __init__(self, value: str) -> None:
        self.value = value


def _raiser(value: str) -> Callable[[], None]:
    def raise_it() -> None:
        raise _ValueError(value)

    return raise_it


def test_excluded_callable_exceptions() -> None:
    """It should ignore exceptions for which a filtering callable returns true."""

    def good(e: BaseException) -> bool:
        return type(e) is _ValueError and e.value == "good"

    cb = CircuitBreaker(exclude=[good])
    with pytest.raises(_ValueError):
        cb.call(_raiser("bad"))
    assert cb.fail_counter == 1
    with pytest.raises(_ValueError):
        cb.call(_raiser("good"))
    assert cb.fail_counter == 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1


def test_excluded_callable_and_types_exceptions() -> None:
    """It should allow a mix of exclusions: filter functions and types."""

    def good(e: BaseException) -> bool:
        return type(e) is _ValueError and e.value == "good"

    cb = CircuitBreaker(exclude=[good, LookupError])

    def err_4() -> None:
        raise LookupError

    with pytest.raises(_ValueError):
        cb.call(_raiser("bad"))
    assert cb.fail_counter == 1
    with pytest.raises(_ValueError):
        cb.call(_raiser("good"))
    assert cb.fail_counter == 0
    with pytest.raises(NotImplementedError):
        cb.call(err)
    assert cb.fail_counter == 1
    with pytest.raises(LookupError):
        cb.call(err_4)
    assert cb.fail_counter == 0


def test_add_excluded_exception(cb: Breaker) -> None:
    """It should allow the user to exclude an exception at a later time."""
    assert cb.excluded_exceptions == ()
    cb.add_excluded_exception(NotImplementedError)
    assert (NotImplementedError,) == cb.excluded_exceptions
    cb.add_excluded_exception(Exception)
    assert (NotImplementedError, Exception) == cb.excluded_exceptions


def test_add_excluded_exceptions(cb: Breaker) -> None:
    """It should allow the user to exclude exceptions at a later time."""
    cb.add_excluded_exceptions(NotImplementedError, Exception)
    assert (NotImplementedError, Exception) == cb.excluded_exceptions


def test_remove_excluded_exception(cb: Breaker) -> None:
    """It should allow the user to remove an excluded exception."""
    cb.add_excluded_exception(NotImplementedError)
    assert (NotImplementedError,) == cb.excluded_exceptions
    cb.remove_excluded_exception(NotImplementedError)
    assert cb.excluded_exceptions == ()


def test_decorator(cb: Breaker) -> None:
    """It should be a decorator."""

    @cb
    def dec_suc(value: Any) -> Any:
        "Docstring"
        return value

    @cb
    def dec_err(value: Any) -> Any:
        "Docstring"
        raise NotImplementedError

    assert dec_suc.__doc__ == "Docstring"
    assert dec_err.__doc__ == "Docstring"
    assert dec_suc.__name__ == "dec_suc"
    assert dec_err.__name__ == "dec_err"
    with pytest.raises(NotImplementedError):
        dec_err(True)
    assert cb.fail_counter == 1
    assert dec_suc(True)
    assert cb.fail_counter == 0


def test_name() -> None:
    """It should allow an optional name to be set and retrieved."""
    cb = CircuitBreaker(name="test_breaker")
    assert cb.name == "test_breaker"
    cb.name = "breaker_test"
    assert cb.name == "breaker_test"


def _trip(cb: Breaker) -> None:
    for i in range(3):
        # DIFFERENCE 1: the third (tripping) call raises its own error
        with pytest.raises(NotImplementedError if i < 3 else CircuitBreakerError):
            cb.call(err)


def test_success_threshold_default_behavior(clock: FakeClock) -> None:
    """A single success after the timeout closes it (success_threshold=1)."""
    cb = CircuitBreaker(fail_max=3, reset_timeout=0.1, success_threshold=1)
    _trip(cb)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.current_state == "closed"
    assert cb.success_counter == 0


def test_success_threshold_multiple_successes_required(clock: FakeClock) -> None:
    """It should require success_threshold successes before closing."""
    cb = CircuitBreaker(fail_max=3, reset_timeout=0.1, success_threshold=3)
    _trip(cb)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.current_state == "half-open"
    assert cb.success_counter == 1
    assert cb.call(suc)
    assert cb.current_state == "half-open"
    assert cb.success_counter == 2
    assert cb.call(suc)
    assert cb.current_state == "closed"
    assert cb.success_counter == 0


def test_success_threshold_failure_resets_counter(clock: FakeClock) -> None:
    """A failure in half-open resets the success counter and opens the circuit."""
    cb = CircuitBreaker(fail_max=3, reset_timeout=0.1, success_threshold=3)
    _trip(cb)
    clock.advance(0.2)
    assert cb.call(suc)
    assert cb.call(suc)
    assert cb.success_counter == 2
    with pytest.raises(NotImplementedError):  # DIFFERENCE 1
        cb.call(err)
    assert cb.current_state == "open"
    assert cb.success_counter == 0


def test_success_threshold_property() -> None:
    """It should support getting and setting success_threshold."""
    cb = CircuitBreaker(success_threshold=5)
    assert cb.success_threshold == 5
    cb.success_threshold = 10
    assert cb.success_threshold == 10


def test_create_new_state_bad_state(cb: Breaker) -> None:
    """An unknown state name is a ValueError."""
    with pytest.raises(ValueError):
        cb._create_new_state("foo")


def test_state_names(cb: Breaker) -> None:
    """The state strings are pybreaker's."""
    assert (STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN) == ("closed", "open", "half-open")
    cb.open()
    assert cb.current_state == STATE_OPEN


# --- CircuitBreakerThreadsTestCase ---------------------------------------------------------


def _start_threads(target: Callable[[], None], n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_fail_thread_safety() -> None:
    """It should compute a failed call atomically to avoid race conditions."""
    cb = CircuitBreaker(fail_max=3000, reset_timeout=1)

    class SpecificError(Exception):
        pass

    @cb
    def fail() -> None:
        raise SpecificError

    def trigger_error() -> None:
        for _ in range(500):
            with suppress(SpecificError):
                fail()

    def _inc_counter(self: Breaker) -> None:  # racy unless the breaker serialises outcomes
        storage = self._state_storage
        c = storage.fail_counter  # type: ignore[attr-defined]
        sleep(0.00005)
        storage.fail_counter = c + 1  # type: ignore[attr-defined]

    setattr(cb, "_inc_counter", MethodType(_inc_counter, cb))  # noqa: B010
    _start_threads(trigger_error, 3)
    assert cb.fail_counter == 1500


def test_success_thread_safety() -> None:
    """It should compute a successful call atomically to avoid race conditions."""
    cb = CircuitBreaker(fail_max=3000, reset_timeout=1)

    @cb
    def ok() -> bool:
        return True

    def trigger_success() -> None:
        for _ in range(500):
            ok()

    class SuccessListener(CircuitBreakerListener):
        def success(self, cb: Any) -> None:
            c = getattr(cb, "_success_counter", 0)
            sleep(0.00005)
            cb._success_counter = c + 1

    cb.add_listener(SuccessListener())
    _start_threads(trigger_success, 3)
    assert cb._success_counter == 1500  # type: ignore[attr-defined]


def test_half_open_thread_safety(clock: FakeClock) -> None:
    """It should allow only one trial call when the circuit is half-open."""
    cb = CircuitBreaker(fail_max=1, reset_timeout=0.01)
    cb.open()
    clock.advance(0.01)

    @cb
    def fail() -> None:
        raise Exception

    def trigger_failure() -> None:
        with suppress(Exception):
            fail()

    class StateListener(CircuitBreakerListener):
        def __init__(self) -> None:
            self._count = 0

        def before_call(self, cb: Any, fun: Any, *args: Any, **kwargs: Any) -> None:
            sleep(0.00005)

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            if new_state.name == "half-open":
                self._count += 1

    state_listener = StateListener()
    cb.add_listener(state_listener)
    _start_threads(trigger_failure, 5)
    assert state_listener._count == 1


def test_fail_max_thread_safety() -> None:
    """It should not allow more failed calls than 'fail_max' setting."""
    cb = CircuitBreaker(fail_max=3000, reset_timeout=1)

    @cb
    def fail() -> None:
        raise Exception

    def trigger_error() -> None:
        for _ in range(2000):
            with suppress(Exception):
                fail()

    class SleepListener(CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            sleep(0.00005)

    cb.add_listener(SleepListener())
    _start_threads(trigger_error, 3)
    assert cb.fail_max == cb.fail_counter


# --- CircuitBreakerContextManagerTestCase ------------------------------------------------------


def test_calling(clock: FakeClock) -> None:
    """calling() returns a context manager that works as a guarded call."""

    class TestError(Exception):
        pass

    cb = CircuitBreaker(fail_max=2, reset_timeout=0.01)
    mock_fn = mock.MagicMock()

    def _do_raise() -> None:
        with cb.calling():
            raise TestError

    def _do_succeed() -> None:
        with cb.calling():
            mock_fn()

    with pytest.raises(TestError):
        _do_raise()
    with pytest.raises(TestError):  # DIFFERENCE 1
        _do_raise()
    assert cb.fail_counter == 2
    assert cb.current_state == "open"
    with pytest.raises(CircuitBreakerError):
        _do_succeed()
    mock_fn.assert_not_called()
    clock.advance(0.01)
    _do_succeed()
    mock_fn.assert_called_once()
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


# --- CircuitBreakerAsyncioTestCase (acall) ---------------------------------------------------


def test_acall_success_closed() -> None:
    """acall awaits the function and keeps the circuit closed."""
    cb = CircuitBreaker()

    async def ok() -> int:
        return 42

    assert asyncio.run(cb.acall(ok)) == 42
    assert cb.fail_counter == 0
    assert cb.current_state == "closed"


def test_acall_with_args_and_kwargs() -> None:
    """acall passes arguments through."""
    cb = CircuitBreaker()

    async def add(a: int, b: int) -> int:
        return a + b

    async def merge(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert asyncio.run(cb.acall(add, 40, 2)) == 42
    assert asyncio.run(cb.acall(merge, a=1, b=2)) == {"a": 1, "b": 2}


def test_acall_listener_callbacks() -> None:
    """Listeners see before_call, success and failure for acall."""
    cb = CircuitBreaker()

    class RecordingListener(CircuitBreakerListener):
        def __init__(self) -> None:
            self.before = 0
            self.successes = 0
            self.failures = 0

        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            self.before += 1

        def success(self, cb: Any) -> None:
            self.successes += 1

        def failure(self, cb: Any, exc: BaseException) -> None:
            self.failures += 1

    listener = RecordingListener()
    cb.add_listener(listener)

    async def ok() -> int:
        return 1

    async def bad() -> None:
        raise ValueError("x")

    async def run() -> None:
        assert await cb.acall(ok) == 1
        with pytest.raises(ValueError):
            await cb.acall(bad)

    asyncio.run(run())
    assert (listener.before, listener.successes, listener.failures) == (2, 1, 1)


def test_acall_failures_open_circuit() -> None:
    """Failures through acall open the circuit."""
    cb = CircuitBreaker(fail_max=3)

    async def fail() -> None:
        raise NotImplementedError

    async def run_fails() -> None:
        for _ in range(3):  # the third: DIFFERENCE 1
            with pytest.raises(NotImplementedError):
                await cb.acall(fail)
        with pytest.raises(CircuitBreakerError):
            await cb.acall(fail)

    asyncio.run(run_fails())
    assert cb.fail_counter == 3
    assert cb.current_state == "open"


def test_acall_open_raises_until_timeout(clock: FakeClock) -> None:
    """An open circuit rejects acall until its timeout, then lets a trial through."""
    cb = CircuitBreaker(fail_max=1, reset_timeout=60)

    async def boom() -> None:
        raise RuntimeError("boom")

    async def ok() -> str:
        return "ok"

    async def run() -> None:
        with pytest.raises(RuntimeError):
            await cb.acall(boom)
        with pytest.raises(CircuitBreakerError):
            await cb.acall(ok)
        clock.advance(60)
        assert await cb.acall(ok) == "ok"

    asyncio.run(run())
    assert cb.current_state == "closed"


def teardown_module() -> None:
    for name in [n for n in breakers.names() if n.startswith("port-")]:
        breakers.remove(name)
