"""Retries with exponential backoff and jitter, built on tenacity's wait and stop strategies.

The first attempt is a plain call: nothing is allocated, read or timed unless it fails. After a
failure the attempts 2…N are paced by tenacity strategies (``wait_exponential_jitter`` and
``stop_after_attempt`` by default, or any ``wait=``/``stop=`` strategy given), evaluated on a
light retry state. Handing the failed call to a ``tenacity.AsyncRetrying`` object instead
measured ~55 µs per failed call here (it copies itself and builds a ``concurrent.futures``
future per attempt), against the ~4 µs budget for a call that fails twice.

When attempts run out the last attempt's exception is re-raised as it is, never wrapped.
By default only transient failures are retried (:func:`resilient._core.classify.is_transient`).
A Retry-After is waited out; no wait starts that cannot end before the deadline; a per-name
retry budget caps retries to a share of calls so an outage is not amplified.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast, overload

import tenacity

from resilient._core import clock as _clock
from resilient._core import deadline as _deadline
from resilient._core import events as _hooks
from resilient._core.blocking import warn_if_on_loop
from resilient._core.classify import (
    _TRANSIENT,
    ErrorCategory,
    is_transient,
    plain_category,
    proves_not_sent,
    retry_after,
)
from resilient._core.deadline import seconds_of
from resilient._core.events import retry_tally as _retry_tally
from resilient._core.exceptions import CircuitOpenError, RiskLimitError
from resilient._core.wrapping import (
    Layer,
    check_target,
    exception_matcher,
    is_async_callable,
    policy_name,
    wrap,
)
from resilient.config import current_config, switches
from resilient.config._bounds import DELAY, check_arguments

__all__ = [
    "BudgetSnapshot",
    "RetryBudget",
    "get_retry_budget",
    "retry",
    "retry_budgets",
    "zero_wait",
]

P = ParamSpec("P")
R = TypeVar("R")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
Idempotent = bool | Callable[[tuple[Any, ...], Mapping[str, Any]], bool]
WaitStrategy = Callable[[Any], float]
StopStrategy = Callable[[Any], bool]

BUDGET_TTL = 10.0  # seconds of traffic a budget remembers (as Finagle's RetryBudget)
FLOOR_BURST = 1.0  # seconds of min_per_second a budget's floor holds at most


# --- testing mode ----------------------------------------------------------------------------

_zero_wait: list[int | None] = []


@contextmanager
def zero_wait(max_attempts: int | None = None) -> Iterator[None]:
    """Inside the block every retry waits 0 s (no sleep call at all), Retry-After included;
    ``max_attempts`` caps attempts of every retry when given."""
    _zero_wait.append(max_attempts)
    try:
        yield
    finally:
        _zero_wait.pop()


# --- retry budget ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    """A retry budget's counts over its current window (about ``BUDGET_TTL`` seconds) and the
    retries its floor holds now."""

    name: str
    calls: int
    retries: int
    refused: int
    ratio: float
    min_per_second: float
    floor: float = 0.0


class RetryBudget:
    """Retries allowed for one name: ``ratio`` × its calls over a window of about
    :data:`BUDGET_TTL` seconds (two half-window buckets), plus a floor for calls too sparse
    for the ratio to allow any.

    The floor is a token bucket of ``min_per_second`` × :data:`FLOOR_BURST` retries, refilled
    at ``min_per_second`` a second, but only while the window's retries are within the
    ratio's share and not within ``BUDGET_TTL`` after a refused retry. A retry the ratio does
    not cover takes a floor token and still counts in the window, so the ratio's share pays
    it back. A sustained outage therefore spends the floor once and then stays at about
    ``1 + ratio`` attempts per request at any rate, while an isolated failure of a sparse
    caller is still retried.

    Calls are counted with one integer increment per call; everything else happens when a
    retry is requested.
    """

    __slots__ = (
        "_floor",
        "_floor_at",
        "_lock",
        "_period_start",
        "_prev_calls",
        "_prev_retries",
        "_refused_at",
        "_retries",
        "calls",
        "min_per_second",
        "name",
        "ratio",
        "refused",
        "shared",
    )

    def __init__(self, name: str, ratio: float, min_per_second: float) -> None:
        self.name = name
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.calls = 0
        self.refused = 0
        self._retries = 0
        self._prev_calls = 0
        self._prev_retries = 0
        self._period_start: float | None = None
        self._floor = math.inf  # full (capped at the current min_per_second when read)
        self._floor_at = 0.0
        self._refused_at: float | None = None
        self._lock = threading.Lock()
        self.shared: Any = None  # a cluster-wide budget (_shared_counts.SharedBudget)

    def _rotate(self, now: float) -> None:
        start = self._period_start
        half = BUDGET_TTL / 2
        if start is None:
            self._period_start = now
        elif now - start >= half:
            if now - start >= BUDGET_TTL:  # a whole window went by: forget both halves
                self._prev_calls = self._prev_retries = 0
            else:
                self._prev_calls, self._prev_retries = self.calls, self._retries
            self.calls = self._retries = 0
            self._period_start = now

    def _refill(self, now: float, accrue: bool) -> float:
        """The floor's tokens now. They accrue only while ``accrue`` (the window's retries are
        within the ratio's share) and not within ``BUDGET_TTL`` after a refused retry."""
        since = self._floor_at
        if self._refused_at is not None:
            since = max(since, self._refused_at + BUDGET_TTL)
        rate = self.min_per_second
        floor = self._floor
        if accrue and now > since:
            floor += (now - since) * rate
        self._floor = floor = min(rate * FLOOR_BURST, floor)
        self._floor_at = now
        return floor

    def try_spend(self) -> bool:
        """Take one retry from the budget; ``False`` (and counted) when it is spent."""
        if self.shared is not None:  # cluster-wide budget (_shared_counts)
            return bool(self.shared.try_spend(self))
        now = _clock._current.monotonic()
        with self._lock:
            self._rotate(now)
            retries = self._retries + self._prev_retries
            share = self.ratio * (self.calls + self._prev_calls)
            if retries + 1 > share:
                if self._refill(now, retries <= share) < 1:
                    self.refused += 1
                    self._refused_at = now
                    return False
                self._floor -= 1
            self._retries += 1
            return True

    def snapshot(self) -> BudgetSnapshot:
        """The counts of the current window."""
        with self._lock:
            now = _clock._current.monotonic()
            self._rotate(now)
            calls = self.calls + self._prev_calls
            return BudgetSnapshot(
                self.name,
                calls,
                self._retries + self._prev_retries,
                self.refused,
                self.ratio,
                self.min_per_second,
                self._refill(now, self._retries + self._prev_retries <= self.ratio * calls),
            )

    def reset(self) -> None:
        """Forget all counts."""
        with self._lock:
            self.calls = self._retries = self._prev_calls = self._prev_retries = 0
            self.refused = 0
            self._period_start = None
            self._floor, self._refused_at = math.inf, None


_budgets: dict[str, RetryBudget] = {}
_budgets_lock = threading.Lock()


def get_retry_budget(name: str) -> RetryBudget:
    """The retry budget shared by every retry named ``name`` (created from settings)."""
    budget = _budgets.get(name)
    if budget is None:
        res = current_config().resilience
        with _budgets_lock:
            budget = _budgets.setdefault(
                name,
                RetryBudget(name, res.retry_budget_ratio, res.retry_budget_min_per_second),
            )
    return budget


def retry_budgets() -> list[BudgetSnapshot]:
    """A snapshot of every retry budget, sorted by name."""
    return [_budgets[n].snapshot() for n in sorted(_budgets)]


# --- the retry state tenacity strategies read ------------------------------------------------


class _Outcome:
    """The failed attempt, shaped like the tenacity future strategies may inspect."""

    __slots__ = ("_exc", "attempt_number")

    def __init__(self, attempt_number: int, exc: BaseException) -> None:
        self.attempt_number = attempt_number
        self._exc = exc

    @property
    def failed(self) -> bool:
        return True

    def exception(self) -> BaseException:
        return self._exc

    def result(self) -> Any:
        raise self._exc


class _State:
    """The attributes of ``tenacity.RetryCallState`` that the default wait and stop read; built
    only after a first failure."""

    __slots__ = ("args", "attempt_number", "fn", "kwargs", "start_time", "wait")

    def __init__(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], start: float | None
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        # read only by deadlines, strategies and events: taken when first read (started())
        self.start_time = _NOT_READ if start is None else start
        self.attempt_number = 1
        self.wait = 0.0  # before the next attempt

    def started(self) -> float:
        """When the call started (its first failure when nothing needed the time before)."""
        if self.start_time == _NOT_READ:
            self.start_time = _clock._current.monotonic()
        return self.start_time


_NOT_READ = float("-inf")


class _FullState(_State):
    """Every attribute of ``tenacity.RetryCallState``, for user ``wait=``/``stop=`` strategies."""

    __slots__ = (
        "idle_for",
        "next_action",
        "outcome",
        "outcome_timestamp",
        "retry_object",
        "upcoming_sleep",
    )

    def __init__(
        self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], start: float | None
    ) -> None:
        super().__init__(fn, args, kwargs, start)
        self.idle_for = 0.0
        self.upcoming_sleep = 0.0
        self.outcome: _Outcome | None = None
        self.outcome_timestamp: float | None = None
        self.retry_object = None
        self.next_action = None

    @property
    def seconds_since_start(self) -> float | None:
        if self.outcome_timestamp is None:
            return None
        return self.outcome_timestamp - self.start_time


# --- the policy -------------------------------------------------------------------------------


class _RetryPolicy:
    __slots__ = (
        "_generation",
        "budget",
        "by_default",
        "custom",
        "deadline",
        "explicit",
        "fn",
        "idempotent",
        "jitter",
        "layer",
        "max_attempts",
        "max_retry_after",
        "name",
        "new_state",
        "no_backoff",
        "retry_on",
        "stop",
        "wait",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        name: str,
        explicit: dict[str, Any],
        jitter: bool,
        retry_on: Callable[[BaseException], bool],
        idempotent: Idempotent,
        deadline: float | None,
        budget: bool,
        wait: WaitStrategy | None,
        stop: StopStrategy | None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.explicit = explicit
        self.jitter = jitter
        self.retry_on = retry_on
        self.by_default = retry_on is is_transient
        self.idempotent = idempotent
        self.deadline = deadline
        self.budget = get_retry_budget(name) if budget else None
        self.layer = Layer("retry", name)
        self._generation = -1
        self.max_attempts = 1
        self.max_retry_after = 60.0
        self.no_backoff = False
        self.custom = wait is not None or stop is not None
        self.wait: WaitStrategy = wait or tenacity.wait_none()
        self.stop: StopStrategy = stop or tenacity.stop_after_attempt(1)
        self.new_state = _FullState if self.custom else _State

    def again(
        self,
        exc: BaseException,
        state: _State | float | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> _State | None:
        """After a failed attempt: the call's state, with the wait before the next attempt
        (``None`` to give up). ``state`` is ``None``, or the call's start time when strategies
        read it, until the first failure builds the state."""
        # A plain built-in error is decided by its type alone (and is never an open circuit
        # or a refused order): asked once here instead of by each later question.
        plain = plain_category(exc)
        if plain is None and isinstance(exc, _NEVER_RETRIED):
            self.failed(exc, state)
            return None
        if not isinstance(state, _State):  # the first failure: only now is anything built
            state = self.new_state(self.fn, args, kwargs, state)
        try:  # as decide(), without its call: this is the failure path's hot spot
            wait = self._decide(exc, plain, state, args, kwargs)
        except _GiveUp:
            wait = None
        except Exception as err:
            _hooks.report_callback_failure(f"retry {self.name!r}: deciding on", type(exc), err)
            wait = None
        if wait is None:
            self.failed(exc, state)
            return None
        state.wait = wait
        state.attempt_number += 1
        return state

    def pause(self, seconds: float) -> None:
        """The wait before the next attempt, from a synchronous caller."""
        warn_if_on_loop("retry", self.name)
        _clock._current.sleep(seconds)

    def refresh(self) -> None:
        if self._generation == switches.generation:
            return
        res = current_config().resilience
        opts = self.explicit
        self._generation = switches.generation
        self.max_attempts = opts.get("max_attempts") or res.retry_max_attempts
        self.max_retry_after = res.retry_max_retry_after
        initial = opts.get("initial_delay", res.retry_initial_delay)
        maximum = opts.get("max_delay", res.retry_max_delay)
        if opts.get("wait") is None:
            self.wait = tenacity.wait_exponential_jitter(
                multiplier=initial, max=maximum, jitter=initial if self.jitter else 0
            )
        # max_delay 0 clamps every backoff to 0: skip computing it.
        self.no_backoff = opts.get("wait") is None and maximum == 0
        if opts.get("stop") is None:
            self.stop = tenacity.stop_after_attempt(self.max_attempts)
        if self.budget is not None:
            self.budget.ratio = res.retry_budget_ratio
            self.budget.min_per_second = res.retry_budget_min_per_second

    def decide(
        self,
        exc: BaseException,
        state: _State,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> float | None:
        """The wait before the next attempt, or ``None`` to give up. Whatever goes wrong
        while deciding (a user strategy or predicate that raises, an exception whose
        attributes raise) gives up: the attempt's own error is then raised as it is."""
        try:
            return self._decide(exc, plain_category(exc), state, args, kwargs)
        except _GiveUp:
            return None
        except Exception as err:
            _hooks.report_callback_failure(f"retry {self.name!r}: deciding on", type(exc), err)
            return None

    def _decide(
        self,
        exc: BaseException,
        plain: ErrorCategory | None,
        state: _State,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> float | None:
        if not switches.retry_enabled:
            return None
        if plain is not None and self.by_default:
            if plain not in _TRANSIENT:
                return None
        elif not self.retry_on(exc):
            return None
        idem = self.idempotent
        if idem is not True:
            allowed = False
            if callable(idem):
                try:
                    allowed = bool(idem(args, kwargs))
                except Exception as err:  # no match: only a "never sent" proof retries
                    _hooks.report_callback_failure(f"retry {self.name!r}: idempotent=", idem, err)
            if not allowed and not proves_not_sent(exc):
                return None
        if self._generation != switches.generation:
            self.refresh()
        attempt = state.attempt_number
        custom = self.custom
        if custom:  # user strategies may look at the outcome and the time
            full = cast("_FullState", state)
            full.outcome = _Outcome(attempt, exc)
            full.outcome_timestamp = _clock._current.monotonic()
        elif attempt >= self.max_attempts:  # what stop_after_attempt decides, inline
            return None
        # A server asking for a wait longer than the configured cap is not waited for.
        server_wait = None if plain is not None else retry_after(exc)
        if server_wait is not None and server_wait > self.max_retry_after:
            return None
        if _zero_wait:
            cap = _zero_wait[-1]
            if cap is not None and attempt >= cap:
                return None
            wait = 0.0
        else:
            wait = 0.0 if self.no_backoff else max(0.0, float(self._wait(state)))
            if not wait <= DELAY.high:  # a strategy's inf or 1e308: never started, as a
                return None  # Retry-After over its cap (the bound of waits, 3600 s)
            if server_wait is not None and server_wait > wait:
                wait = server_wait
            limit = _deadline._deadline.get()
            if self.deadline is not None:
                own = state.started() + self.deadline
                limit = own if limit is None or own < limit else limit
            if limit is not None and _clock._current.monotonic() + wait >= limit:
                return None
        if custom:
            # As tenacity: the stop strategy sees the wait it would start (stop_before_delay).
            full.upcoming_sleep = wait
            if self._stop(state):
                return None
        if self.budget is not None and not self.budget.try_spend():
            if _hooks.hooks:
                _hooks.event(
                    _hooks.EventKind.RETRY_BUDGET_EXHAUSTED,
                    self.name,
                    exc,
                    attempt=attempt,
                    elapsed=_clock._current.monotonic() - state.started(),
                )
            return None
        if custom:
            full.idle_for += wait
        # Counted here rather than by a hook: with only the default hooks installed (and
        # logging off) a retry then builds no event object at all.
        _retry_tally.append((self.name, attempt, exc.__class__))  # count_retry(), inlined
        if len(_retry_tally) >= _hooks.FOLD_AT:
            _hooks.fold_retries()
        if _hooks.retry_hooks:
            _hooks.event(
                _hooks.EventKind.RETRY,
                self.name,
                exc,
                attempt=attempt,
                wait=wait,
                elapsed=_clock._current.monotonic() - state.started(),
            )
        return wait

    def _wait(self, state: _State) -> float:
        try:
            return self.wait(state)
        except Exception as err:
            _hooks.report_callback_failure(f"retry {self.name!r}: wait=", self.wait, err)
            raise _GiveUp from None

    def _stop(self, state: _State) -> bool:
        try:
            return bool(self.stop(state))
        except Exception as err:
            _hooks.report_callback_failure(f"retry {self.name!r}: stop=", self.stop, err)
            return True

    def failed(self, exc: BaseException, state: _State | float | None) -> None:
        if self.layer.outermost and _hooks.hooks and not isinstance(exc, CircuitOpenError):
            if isinstance(state, _State):
                attempt, elapsed = (
                    state.attempt_number,
                    _clock._current.monotonic() - state.started(),
                )
            else:
                attempt, elapsed = 1, 0.0
            _hooks.event(
                _hooks.EventKind.CALL_FAILED, self.name, exc, attempt=attempt, elapsed=elapsed
            )


class _GiveUp(Exception):
    """A user wait strategy failed: no retry (already reported)."""


_NEVER_RETRIED = (CircuitOpenError, RiskLimitError)
"""Never retried, whatever ``retry_on`` says: an open circuit and a refused order."""


@overload
def retry(
    *,
    max_attempts: int | None = None,
    initial_delay: float | timedelta | None = None,
    max_delay: float | timedelta | None = None,
    jitter: bool = True,
    retry_on: RetryOn | None = None,
    idempotent: Idempotent = True,
    deadline: float | timedelta | None = None,
    budget: bool = True,
    name: str | None = None,
    wait: WaitStrategy | None = None,
    stop: StopStrategy | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def retry(fn: Callable[P, R], /) -> Callable[P, R]: ...


def retry(
    fn: Callable[P, R] | None = None,
    /,
    *,
    max_attempts: int | None = None,
    initial_delay: float | timedelta | None = None,
    max_delay: float | timedelta | None = None,
    jitter: bool = True,
    retry_on: RetryOn | None = None,
    idempotent: Idempotent = True,
    deadline: float | timedelta | None = None,
    budget: bool = True,
    name: str | None = None,
    wait: WaitStrategy | None = None,
    stop: StopStrategy | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]] | Callable[P, R]:
    """Retry a function's transient failures with exponential backoff and jitter.

    Bare ``@retry`` (no parentheses) takes every setting from configuration.

    Args:
        max_attempts: attempts including the first (``resilience.retry_max_attempts``).
        initial_delay / max_delay: backoff bounds in seconds (``retry_initial_delay``,
            ``retry_max_delay``).
        jitter: add up to ``initial_delay`` of random jitter to each wait.
        retry_on: exception types, a tuple of them, or ``predicate(exc) -> bool``; default:
            transient failures only (network, timeouts, rate limits, 5xx, dropped connections).
        idempotent: ``False`` for operations that must not run twice (orders): a failure is
            then retried only when it proves the request never left. May be a predicate
            ``(args, kwargs) -> bool``, evaluated only after a failure (for example "an
            idempotency key was passed").
        deadline: seconds from the call's start after which no new attempt starts; an
            ambient ``with resilient.deadline(...)`` applies too (the earlier wins).
        budget: draw retries from the per-name retry budget
            (``retry_budget_ratio`` of calls + ``retry_budget_min_per_second``).
        name: the budget's and the events' name (default: the function's qualified name).
        wait / stop: tenacity wait/stop strategies replacing the backoff/attempt settings;
            with either, the call's start time is taken before the first attempt (as
            tenacity's ``stop_after_delay`` expects).

    A server-requested wait (Retry-After) longer than ``resilience.retry_max_retry_after``
    or than the deadline is not waited: the error is raised at once. A ``retry_on``,
    ``idempotent``, ``wait`` or ``stop`` callback that raises is logged once and counts as
    "do not retry".

    Raises:
        The last attempt's own exception when retries end.
    """
    explicit: dict[str, Any] = {}
    if max_attempts is not None:
        if (
            not isinstance(max_attempts, int)
            or isinstance(max_attempts, bool)
            or (max_attempts < 1)
        ):
            raise ValueError(f"max_attempts must be an integer ≥ 1, got {max_attempts!r}")
        explicit["max_attempts"] = max_attempts
    if initial_delay is not None:
        explicit["initial_delay"] = seconds_of(initial_delay, "initial_delay")
    if max_delay is not None:
        explicit["max_delay"] = seconds_of(max_delay, "max_delay")
    if (
        "initial_delay" in explicit
        and "max_delay" in explicit
        and (explicit["max_delay"] < explicit["initial_delay"])
    ):
        raise ValueError("max_delay must be ≥ initial_delay")
    if wait is not None:
        explicit["wait"] = wait
    if stop is not None:
        explicit["stop"] = stop
    own_deadline = seconds_of(deadline, "deadline") if deadline is not None else None
    check_arguments("retry", {**explicit, "deadline": own_deadline}, "retry")  # upper bounds
    if retry_on is None:
        matcher: Callable[[BaseException], bool] = is_transient
    else:
        built = exception_matcher(_hooks.guard_spec(retry_on, "retry_on="), "retry_on")
        if built is None:
            raise ValueError("retry_on is empty: give exception types or a predicate")
        matcher = built
    if not isinstance(idempotent, bool) and not callable(idempotent):
        raise TypeError("idempotent must be a bool or a predicate (args, kwargs) -> bool")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        check_target(fn, "@retry")
        policy = _RetryPolicy(
            fn,
            name or policy_name(fn),
            explicit,
            jitter,
            matcher,
            idempotent,
            own_deadline,
            budget,
            wait,
            stop,
        )
        policy.refresh()
        bud = policy.budget
        # User strategies may read the time since the call started: start the clock before
        # the first attempt (as tenacity). The default success path stays untimed.
        timed = own_deadline is not None or policy.custom
        again = policy.again
        # The shells below only call and wait; everything else is in _RetryPolicy.again. The
        # next attempt starts outside the except block, so its error never gets this one as
        # __context__; a last failure is re-raised there as it is.

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            async def acall(*args: Any, **kwargs: Any) -> Any:
                if bud is not None:
                    bud.calls += 1
                state: _State | float | None = _clock._current.monotonic() if timed else None
                while True:
                    try:
                        return await afn(*args, **kwargs)
                    except Exception as exc:
                        if (state := again(exc, state, args, kwargs)) is None:
                            raise
                    if state.wait:
                        await _clock._current.asleep(state.wait)

            return cast("Callable[P, R]", wrap(acall, fn, policy.layer))

        pause = policy.pause

        def call(*args: Any, **kwargs: Any) -> Any:
            if bud is not None:
                bud.calls += 1
            state: _State | float | None = _clock._current.monotonic() if timed else None
            while True:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if (state := again(exc, state, args, kwargs)) is None:
                        raise
                if state.wait:
                    pause(state.wait)

        return cast("Callable[P, R]", wrap(call, fn, policy.layer))

    if fn is not None:  # bare @retry
        return decorate(fn)
    return decorate
