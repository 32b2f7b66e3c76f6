"""Circuit breakers on pybreaker: its state machine, listeners and storage, driven correctly
under asyncio.

pybreaker's own decorator returns an ``async def`` function's coroutine unawaited (so failures
are never counted) and lets every concurrent coroutine through a half-open circuit. Here the
outcome is recorded after the await, and a half-open circuit hands out at most
``half_open_max_calls`` trial permits; other callers get :class:`~resilient.CircuitOpenError`
at once. pybreaker's state classes still decide the transitions (extended with a
Resilience4j-style failure-rate and slow-call window), its listener seam reports them and its
storage seam holds the state.

The call path of a closed breaker is one flag check, the call and one counter increment. An
open breaker rejects without taking a lock. Thresholds come from settings (refreshed after a
configuration reload, checked on failure paths only) unless given as arguments.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import types
import weakref
from collections.abc import Awaitable, Callable, Generator, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar, cast, overload

from resilient._core import clock as _clock
from resilient._core import events as _hooks
from resilient._core.deadline import seconds_of
from resilient._core.exceptions import CircuitOpenError, ConfigError, ConfigProblem
from resilient._core.log import logger
from resilient._core.pybreaker_import import pybreaker
from resilient._core.wrapping import (
    Layer,
    check_target,
    exception_matcher,
    is_async_callable,
    policy_name,
    wrap,
)
from resilient._policies.breaker_storage import (
    ORIGIN,
    CircuitRecord,
    FailureTally,
    LocalCircuitStorage,
    SharedStateBackend,
    install_shared_backend,
    on_backend_change,
    shared_attached,
)
from resilient._policies.breaker_window import CountWindow, TimeWindow, Window
from resilient.config import current_config, switches
from resilient.config._bounds import check_arguments

__all__ = [
    "Breaker",
    "BreakerRegistry",
    "BreakerSnapshot",
    "breaker",
    "breakers",
    "get_breaker",
]

P = ParamSpec("P")
R = TypeVar("R")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN
_NEVER = -math.inf

ExcludeSpec = (
    type[BaseException]
    | Callable[[BaseException], bool]
    | Sequence[type[BaseException] | Callable[[BaseException], bool]]
)


class _Rejected(CircuitOpenError):
    """A :class:`CircuitOpenError` built by ``BaseException``'s C initialiser (its attributes
    read from ``args``, its message formatted only when shown), so that rejecting a call
    costs about a third of building the base class."""

    __init__ = BaseException.__init__

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(self.args[0])

    @property
    def state(self) -> str:  # type: ignore[override]
        return str(self.args[1])

    @property
    def retry_after(self) -> float:  # type: ignore[override]
        return float(self.args[2])

    def __str__(self) -> str:
        return f"circuit {self.name!r} is {self.state}; next trial in {self.retry_after:.3f}s"

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, str, float]]:
        return (CircuitOpenError, (self.name, self.state, self.retry_after))


# Shown, printed and pickled as the public class (unpickling yields a plain CircuitOpenError).
_Rejected.__name__ = _Rejected.__qualname__ = CircuitOpenError.__name__
_Rejected.__module__ = CircuitOpenError.__module__


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A consistent read of one breaker for health, metrics and the CLI."""

    name: str
    state: str
    failure_count: int
    success_count: int
    total_calls: int
    success_rate: float
    rejected_calls: int
    consecutive_failures: int
    opened_at: float | None
    retry_after: float
    last_failure_category: str | None
    last_failure_at: float | None
    last_recovery_seconds: float | None
    disabled: bool
    forced_open: bool
    shared: bool
    failure_threshold: int
    reset_timeout: float
    half_open_max_calls: int

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return asdict(self)

    def health(self) -> tuple[str, str]:
        """The breaker as a health component: ``(status, detail)``. Closed is ``healthy``,
        half-open ``degraded``, open ``unhealthy`` (with the time to the next trial)."""
        status = _HEALTH.get(self.state, "degraded")
        if self.disabled:
            return status, "circuit breaker disabled"
        if self.state == OPEN:
            return status, f"circuit open; next trial in {self.retry_after:.1f}s"
        if self.state == HALF_OPEN:
            return status, "circuit half-open; trial calls in progress"
        return status, ""


_HEALTH = {CLOSED: "healthy", HALF_OPEN: "degraded", OPEN: "unhealthy"}


# --- pybreaker states: pybreaker decides, these add the window rules and never raise --------


class _ClosedState(pybreaker.CircuitClosedState):
    """Closed: opens after ``fail_max`` consecutive failures (pybreaker's rule) or when the
    window's failure or slow-call rate reaches its threshold."""

    def __init__(self, cb: Breaker) -> None:
        super().__init__(cb)
        self._cb = cb

    def on_failure(self, exc: BaseException) -> None:
        cb = self._cb
        cb._record_window(failed=True)
        if cb.fail_counter >= cb.fail_max or cb._window_trips():
            cb.open()

    def on_success(self) -> None:
        cb = self._cb
        cb._record_window(failed=False)
        if cb._window_trips():
            cb.open()


class _OpenState(pybreaker.CircuitOpenState):
    """Open: :meth:`Breaker._admit` rejects calls until ``reset_timeout`` has passed (a call
    admitted before the circuit opened has no say in its state)."""

    def __init__(self, cb: Breaker) -> None:
        super().__init__(cb)


class _HalfOpenState(pybreaker.CircuitHalfOpenState):
    """Half-open: pybreaker's rule (``success_threshold`` trial successes close it); a failed
    trial opens it again."""

    def __init__(self, cb: Breaker) -> None:
        super().__init__(cb, None)
        self._cb = cb

    def on_failure(self, exc: BaseException) -> None:  # type: ignore[override]  # never raises
        self._cb.open()


_State = _ClosedState | _OpenState | _HalfOpenState


_OPTION_NAMES = (
    "failure_threshold",
    "reset_timeout",
    "half_open_max_calls",
    "success_threshold",
    "failure_rate_threshold",
    "slow_call_duration",
    "slow_call_rate_threshold",
    "window_size",
    "window_type",
    "minimum_calls",
    "shared",
)


def _check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate explicit breaker options; returns them normalised (durations in seconds)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a breaker needs a non-empty name, got {name!r}")
    out = dict(options)
    for key in ("reset_timeout", "slow_call_duration"):
        if key in out:
            out[key] = seconds_of(out[key], f"breaker {name!r}: {key}")
    for key in ("failure_threshold", "half_open_max_calls", "success_threshold", "minimum_calls"):
        value = out.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ValueError(f"breaker {name!r}: {key} must be an integer ≥ 1, got {value!r}")
    for key in ("failure_rate_threshold", "slow_call_rate_threshold"):
        value = out.get(key)
        if value is not None and not (isinstance(value, int | float) and 0 < value <= 1):
            raise ValueError(
                f"breaker {name!r}: {key} is a share of calls in (0, 1], got {value!r}"
                " (write 0.5 for 50 %)"
            )
    if out.get("window_type", "count") not in ("count", "time"):
        raise ValueError(
            f"breaker {name!r}: window_type must be 'count' or 'time', got {out['window_type']!r}"
        )
    size = out.get("window_size")
    if size is not None and (
        isinstance(size, bool) or not (isinstance(size, int | float) and size >= 1)
    ):
        raise ValueError(f"breaker {name!r}: window_size must be ≥ 1, got {size!r}")
    check_arguments("breaker", out, f"breaker {name!r}")  # upper bounds (config._bounds)
    if "slow_call_rate_threshold" in out and "slow_call_duration" not in out:
        raise ValueError(
            f"breaker {name!r}: slow_call_rate_threshold needs slow_call_duration (seconds)"
        )
    _check_window(name, out)
    return out


def _check_window(name: str, options: dict[str, Any]) -> None:
    """A count window of N calls never holds more than N: ``minimum_calls`` above it would
    keep the rate rules from ever firing."""
    minimum = options.get("minimum_calls")
    if minimum is None or options.get("window_type", "count") != "count":
        return
    size = options.get("window_size") or 100
    if minimum > size:
        raise ValueError(
            f"breaker {name!r}: minimum_calls={minimum} is larger than the count window "
            f"(window_size={size} calls), so the rate rules could never fire. Give "
            f"minimum_calls ≤ window_size, or window_type='time'"
        )


class _Threshold:
    """A pybreaker threshold property: read from the settings in force, set through the option
    checks (and kept across a settings reload)."""

    def __init__(self, key: str, doc: str) -> None:
        self.key = key
        self.slot = f"_{key}_setting"
        self.__doc__ = doc

    @overload
    def __get__(self, cb: None, owner: type) -> _Threshold: ...
    @overload
    def __get__(self, cb: Breaker, owner: type) -> Any: ...
    def __get__(self, cb: Breaker | None, owner: type) -> Any:
        return self if cb is None else getattr(cb, self.slot)

    def __set__(self, cb: Breaker, value: Any) -> None:
        checked = _check_options(cb._key, {self.key: value})[self.key]
        with cb._mutex:
            cb._overrides[self.key] = checked
            setattr(cb, self.slot, checked)


class Breaker(pybreaker.CircuitBreaker):
    """One named circuit breaker, shared by every function that names it.

    Use :func:`breaker` to decorate and :data:`breakers` / :func:`get_breaker` to find one.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        self._explicit: dict[str, Any] = _check_options(name, options or {})
        self._key = name
        self._layer = Layer("breaker", name)
        self._layer.outermost = False
        self._mutex = threading.RLock()
        # the state lives in the storage alone; the state objects only decide transitions
        self._store = LocalCircuitStorage()
        self._states: dict[str, _State] = {
            CLOSED: _ClosedState(self),
            OPEN: _OpenState(self),
            HALF_OPEN: _HalfOpenState(self),
        }
        self._generation = -1
        self._fast = True
        self._listening = False
        self._open_until = _NEVER
        self._opened_mono: float | None = None
        self._outage_start: float | None = None
        self._last_recovery: float | None = None
        self._last_failure_category: str | None = None
        self._last_failure_at: float | None = None
        self._successes = 0
        self._failures = 0
        self._rejected = 0
        self._permits = 0
        self._episode = 0
        self._forced = False
        self._disabled = False
        self._remote = False
        self._version = 0
        self._backend: SharedStateBackend | None = None
        self._shared_tally: FailureTally | None = None
        self._window: Window | None = None
        self._pending_slow = False
        self.half_open_max_calls = 1
        self.failure_rate_threshold: float | None = None
        self.slow_call_duration: float | None = None
        self.slow_call_rate_threshold: float | None = None
        self.minimum_calls = 1
        self.shared = False
        # values given through pybreaker's setters (fail_max, ...): kept across reloads
        self._overrides: dict[str, Any] = {}
        super().__init__(name=name, state_storage=self._store, throw_new_error_on_trip=False)
        self._apply_settings()

    # --- configuration --------------------------------------------------------------------

    def _apply_settings(self) -> None:
        """(Re)compute thresholds: explicit options win, the rest come from settings."""
        config = current_config()
        res = config.resilience
        opts = {**self._explicit, **self._overrides}
        self._generation = switches.generation
        self._failure_threshold_setting: int = (
            opts.get("failure_threshold") or res.circuit_breaker_failure_threshold
        )
        self._reset_timeout_setting: float = opts.get("reset_timeout", res.circuit_breaker_timeout)
        self._success_threshold_setting: int = (
            opts.get("success_threshold") or res.circuit_breaker_success_threshold
        )
        self.half_open_max_calls = (
            opts.get("half_open_max_calls") or res.circuit_breaker_half_open_max_calls
        )
        shared = opts.get("shared")
        self.shared = bool(res.circuit_breaker_shared if shared is None else shared)
        if self.shared and not config.redis.url:
            raise ConfigError(
                [
                    ConfigProblem(
                        key="redis.url",
                        rule=f"breaker {self._key!r} keeps shared circuit state but no Redis "
                        "URL is set",
                        fix="set redis.url (AI_TRADER_REDIS__URL) or drop shared=True / "
                        "resilience.circuit_breaker_shared",
                        env=config.env,
                    )
                ],
                env=config.env,
            )
        if self.shared and self._backend is None:
            # At creation, or shared switched on by a reload. Without a factory having
            # installed the backend yet, the first shared breaker installs it (installing
            # attaches the registered shared breakers).
            backend = install_shared_backend(config.redis.url)
            if self._backend is None:
                self._attach(backend)
        rate = opts.get("failure_rate_threshold")
        slow_d = opts.get("slow_call_duration")
        slow_rate = opts.get("slow_call_rate_threshold")
        self.failure_rate_threshold = rate
        self.slow_call_duration = slow_d
        self.slow_call_rate_threshold = slow_rate if slow_d is not None else None
        if slow_d is not None and slow_rate is None:
            self.slow_call_rate_threshold = 1.0
        windowed = rate is not None or slow_d is not None
        if windowed:
            size = opts.get("window_size") or (100 if opts.get("window_type") != "time" else 60)
            kind = opts.get("window_type", "count")
            current = self._window
            if (
                current is None
                or current.size != math.ceil(size)
                or (isinstance(current, TimeWindow) != (kind == "time"))
            ):
                self._window = TimeWindow(size) if kind == "time" else CountWindow(int(size))
            default_min = int(size) if kind == "count" else 10
            self.minimum_calls = opts.get("minimum_calls") or default_min
        else:
            self._window = None
        self._refresh_fast()

    fail_max = _Threshold("failure_threshold", "Failures that open the circuit (pybreaker's name).")
    reset_timeout = _Threshold("reset_timeout", "Seconds open before a trial call.")
    success_threshold = _Threshold("success_threshold", "Trial successes that close the circuit.")

    def _refresh(self) -> None:
        if self._generation != switches.generation:
            with self._mutex:
                if self._generation != switches.generation:
                    self._apply_settings()

    def _merge_options(self, options: dict[str, Any]) -> None:
        """Adopt explicit options from another decoration of the same name; conflicting
        explicit values are an error (the breaker is shared, so they cannot both hold)."""
        checked = _check_options(self._key, options)
        with self._mutex:
            _check_window(self._key, {**self._explicit, **checked})
            changed = False
            for key, value in checked.items():
                if key in self._explicit:
                    if self._explicit[key] != value:
                        raise ValueError(
                            f"breaker {self._key!r} already has {key}={self._explicit[key]!r};"
                            f" another decoration asks for {value!r}. A name means one shared "
                            "breaker: give the same value, drop the argument or use another "
                            "name"
                        )
                else:
                    self._explicit[key] = value
                    changed = True
            if changed:
                self._apply_settings()

    def _refresh_fast(self) -> None:
        """The fast path (a flag check, the call, one increment) serves a closed circuit with
        no failure pending, no window and no listener."""
        self._fast = (
            self._store.state == CLOSED
            and self._store.counter == 0
            and self._window is None
            and not self._disabled
            and not self._forced
            and not self._listening
        )

    # --- pybreaker listeners (the user's: the breaker's own bookkeeping is not one of them) ---

    def add_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        """Register a pybreaker listener (``before_call``, ``success``, ``failure``,
        ``state_change``); one that raises is logged once and ignored."""
        super().add_listener(listener)
        with self._mutex:
            self._listening = True
            self._refresh_fast()

    def remove_listener(self, listener: pybreaker.CircuitBreakerListener) -> None:
        """Unregister a listener added with :meth:`add_listener` (``ValueError`` if absent)."""
        super().remove_listener(listener)
        with self._mutex:
            self._listening = bool(self.listeners)
            self._refresh_fast()

    def _notify(self, method: str, *args: Any, **kwargs: Any) -> None:
        for listener in self.listeners:
            callback = getattr(listener, method)
            try:
                callback(self, *args, **kwargs)
            except Exception as exc:
                _hooks.report_callback_failure(
                    f"breaker {self._key!r}: pybreaker listener", callback, exc
                )

    def is_system_error(self, exception: BaseException) -> bool:
        """pybreaker's rule (excluded types and predicates are not system errors), with a
        predicate that raises counted as no match."""
        cls = type(exception)
        for exclusion in self.excluded_exceptions:
            if isinstance(exclusion, type):
                if issubclass(cls, exclusion):
                    return False
            elif callable(exclusion):
                try:
                    if exclusion(exception):
                        return False
                except Exception as exc:
                    _hooks.report_callback_failure(
                        f"breaker {self._key!r}: excluded exception predicate", exclusion, exc
                    )
        return True

    # --- transitions: the storage holds the state, pybreaker's states decide --------------------

    def open(self) -> bool:
        """Open the circuit now (pybreaker's transition, on the current clock)."""
        with self._mutex:
            clock = _clock._current
            self._opened_mono = clock.monotonic()
            self._store.opened_at = datetime.fromtimestamp(clock.time(), UTC)
            self._move(OPEN)
            return False

    def half_open(self) -> None:
        """Let trial calls through (up to ``half_open_max_calls`` at a time)."""
        self._move(HALF_OPEN)

    def close(self) -> None:
        """Close the circuit: calls run normally."""
        self._move(CLOSED)

    @property  # type: ignore[override]  # pybreaker returns its state object; users get the name
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (an expired open circuit still reads
        ``"open"`` until the next call moves it to half-open)."""
        return str(self._store.state)

    @state.setter
    def state(self, state_str: str) -> None:
        self._move(state_str)

    def _move(self, new: str) -> None:
        """The one transition: the storage's state and counters as pybreaker's states reset
        them on entry, then the breaker's bookkeeping, then the listeners (guarded)."""
        if new not in self._states:
            raise ValueError(f"unknown circuit state {new!r}")
        with self._mutex:
            store = self._store
            old = store.state
            store.state = new
            store.reset_success_counter()
            if new == CLOSED:
                store.reset_counter()
            self._on_transition(old, new)
            if self._listening:
                self._notify("state_change", self._states[old], self._states[new])

    def _on_transition(self, old: str, new: str) -> None:
        now = _clock._current.monotonic()
        if new == OPEN:
            if self._opened_mono is None:
                self._opened_mono = now
            self._open_until = math.inf if self._forced else self._opened_mono + self.reset_timeout
            if self._outage_start is None:
                self._outage_start = self._opened_mono
        else:
            self._open_until = _NEVER
            if new == HALF_OPEN:
                self._episode += 1
                self._permits = 0
            elif new == CLOSED:
                if self._outage_start is not None and old != CLOSED:
                    self._last_recovery = max(0.0, now - self._outage_start)
                self._outage_start = None
        if self._window is not None and new != HALF_OPEN:
            self._window.reset()
        self._refresh_fast()
        if old == new:
            return
        if self.shared and self._backend is not None and not self._remote:
            self._publish()
        _hooks.event(_hooks.EventKind.BREAKER_STATE, self._key, old_state=old, new_state=new)

    def _settle(self, exc: BaseException | None) -> None:
        """pybreaker's outcome rule (under the lock): a system error counts a consecutive
        failure and lets the state decide; a success (or an excluded error) clears the count."""
        state = self._states[self._store.state]
        if exc is None:
            if self._store.counter:
                self._store.reset_counter()
                self._refresh_fast()
            state.on_success()
            if self._listening:
                self._notify("success")
        else:
            self._store.increment_counter()
            self._fast = False  # a failure pending: the next success clears it the slow way
            if self._listening:
                self._notify("failure", exc)
            state.on_failure(exc)

    # --- window rules ------------------------------------------------------------------------

    def _record_window(self, failed: bool) -> None:
        window = self._window
        if window is not None:
            window.record(failed, self._pending_slow, _clock._current.monotonic())

    def _window_trips(self) -> bool:
        window = self._window
        if window is None:
            return False
        calls, fails, slow = window.counts(_clock._current.monotonic())
        if calls < self.minimum_calls or calls == 0:
            return False
        rate = self.failure_rate_threshold
        if rate is not None and fails / calls >= rate:
            return True
        slow_rate = self.slow_call_rate_threshold
        return (
            self.slow_call_duration is not None
            and slow_rate is not None
            and (slow / calls >= slow_rate)
        )

    # --- the call path -------------------------------------------------------------------------

    def _reject(self, now: float) -> _Rejected:
        self._rejected += 1
        if self._store.state == OPEN:
            until = self._open_until
            retry_after = self.reset_timeout if until == math.inf else max(0.0, until - now)
            return cast(_Rejected, _Rejected(self._key, OPEN, retry_after))
        return cast(_Rejected, _Rejected(self._key, self._store.state, 0.0))

    def _begin(
        self, exclude: Callable[[BaseException], bool] | None, layer: Layer | None
    ) -> _Call | _Rejected | None:
        """Admit a call past the fast path: ``None`` when the breaker is off (just call), the
        error to raise when an open circuit rejects it (the shell raises it, one frame
        cheaper), else the admitted call."""
        if self._disabled or not switches.breaker_enabled:
            return None
        now = _clock._current.monotonic()
        if now < self._open_until:  # open: rejected at once, without the lock
            self._rejected += 1
            wait = self._reset_timeout_setting if self._forced else self._open_until - now
            rejected: _Rejected = _Rejected(self._key, OPEN, wait)
            return rejected
        return _Call(self, exclude, layer, self._admit())

    def _enter(
        self, exclude: Callable[[BaseException], bool] | None, layer: Layer | None
    ) -> _Call | None:
        """:meth:`_begin`, raising the rejection."""
        call = self._begin(exclude, layer)
        if isinstance(call, CircuitOpenError):
            raise call
        return call

    def _admit(self) -> int:
        """Admission for a circuit that is not plainly closed; returns a half-open permit
        token (0: none needed) or raises CircuitOpenError."""
        self._refresh()
        if self._store.state == CLOSED and not self._forced:  # windowed: no lock per call
            return 0
        now = _clock._current.monotonic()
        if now < self._open_until:  # open: rejected without the lock
            raise self._reject(now)
        with self._mutex:
            if self._forced:
                raise self._reject(now)
            state = self._store.state
            if state == CLOSED:
                return 0
            if state == OPEN:
                if now < self._open_until:
                    raise self._reject(now)
                self.half_open()
            if self._permits >= self.half_open_max_calls:
                raise self._reject(now)
            self._permits += 1
            return self._episode

    def _release(self, permit: int, cluster: bool = False) -> None:
        """Give back a local trial permit (unless its episode is over) and, when this call
        was granted one, the cluster-wide permit."""
        if permit and permit == self._episode and self._permits > 0:
            self._permits -= 1
        if cluster:
            backend = self._backend
            if backend is not None:
                backend.release_permit(self._key)

    def _failed(
        self,
        exc: BaseException,
        exclude: Callable[[BaseException], bool] | None,
        start: float,
        permit: int = 0,
        layer: Layer | None = None,
        cluster: bool = False,
    ) -> None:
        """Record a failed call (failure paths only). ``exclude`` is guarded (a raising
        predicate is no match); whatever else goes wrong, the permits are given back."""
        try:
            excluded = exclude is not None and exclude(exc)
            if not excluded and self._generation != switches.generation:
                self._refresh()
            # user classification rules run here: what they raise gives the permits back too
            category = "" if excluded else _hooks.category_of(exc)
        except BaseException:
            with self._mutex:
                self._release(permit, cluster)
            raise
        if excluded:
            self._succeeded(start, permit, cluster)
            return
        clock = _clock._current
        with self._mutex:
            try:
                if start and self.slow_call_duration is not None:
                    self._pending_slow = clock.monotonic() - start > self.slow_call_duration
                # A trial from an earlier half-open episode, or a call admitted before the
                # circuit opened, has no say in the state any more (pybreaker, which runs
                # calls under its lock, never sees one).
                stale = (permit and permit != self._episode) or self._store.state == OPEN
                system = self.is_system_error(exc)
                if system:
                    self._failures += 1
                    if self._shared_tally is not None:  # cluster-wide counts
                        self._shared_tally.kick()
                    self._last_failure_category = category
                    self._last_failure_at = clock.time()
                else:
                    self._successes += 1
                if not stale:
                    self._settle(exc if system else None)
            finally:
                self._pending_slow = False
                if permit or cluster:
                    self._release(permit, cluster)
        if layer is not None and layer.outermost:
            _hooks.event(_hooks.EventKind.CALL_FAILED, self._key, exc, attempt=1)

    def _succeeded(self, start: float, permit: int = 0, cluster: bool = False) -> None:
        """Record a success that needs state work (half-open, window, pending failures)."""
        with self._mutex:
            try:
                self._successes += 1
                if start and self.slow_call_duration is not None:
                    elapsed = _clock._current.monotonic() - start
                    self._pending_slow = elapsed > self.slow_call_duration  # strictly slower
                if not (permit and permit != self._episode) and self._store.state != OPEN:
                    self._settle(None)
            finally:
                self._pending_slow = False
                if permit or cluster:
                    self._release(permit, cluster)

    def _guarded_sync(
        self, call: _Call | None, fn: Callable[..., R], /, *args: Any, **kw: Any
    ) -> R:
        """The sync shell past the fast path (``call``: admitted by :meth:`_begin`)."""
        if call is None:
            return fn(*args, **kw)
        try:
            if call.wants_cluster:
                call.grant(self._cluster_permit_sync())
            call.run(fn, args, kw)
            result = fn(*args, **kw)
        except BaseException as exc:
            call.failed(exc)
            raise
        if isinstance(result, types.GeneratorType):
            return cast(R, call.follow(result))
        call.succeeded()
        return result

    async def _guarded_async(
        self, call: _Call | None, fn: Callable[..., Awaitable[R]], /, *args: Any, **kw: Any
    ) -> R:
        """The async shell past the fast path: :meth:`_guarded_sync`, awaiting."""
        if call is None:
            return await fn(*args, **kw)
        try:
            if call.wants_cluster:
                call.grant(await self._cluster_permit())
            call.run(fn, args, kw)
            result = await fn(*args, **kw)
        except BaseException as exc:
            call.failed(exc)
            raise
        call.succeeded()
        return result

    def _cluster_permit_sync(self) -> bool | None:
        backend = cast(SharedStateBackend, self._backend)
        return backend.acquire_permit_sync(self._key, self.half_open_max_calls, self.reset_timeout)

    def _cluster_permit(self) -> Awaitable[bool | None]:
        backend = cast(SharedStateBackend, self._backend)
        return backend.acquire_permit(self._key, self.half_open_max_calls, self.reset_timeout)

    # --- shared state ------------------------------------------------------------------------

    def _attach(self, backend: SharedStateBackend | None) -> None:
        with self._mutex:
            self._backend = backend
        if backend is not None:
            backend.watch(self._key, self._apply_remote)
            self._shared_tally = shared_attached(self, backend)

    def _publish(self) -> None:
        backend = self._backend
        if backend is None:
            return
        self._version = max(self._version + 1, int(_clock._current.time() * 1e6))
        state = self._store.state
        opened = self._store.opened_at
        record = CircuitRecord(
            state=state,
            opened_at=opened.timestamp() if opened is not None and state != CLOSED else None,
            version=self._version,
            origin=ORIGIN,
            forced=self._forced,
        )
        try:
            backend.publish(self._key, record)
        except Exception as exc:  # the shared store degrades; local state keeps working
            logger.warning("circuit {}: publishing state failed: {}", self._key, type(exc).__name__)

    def _apply_remote(self, record: CircuitRecord) -> None:
        """Apply a transition published by another process (newer versions only)."""
        if record.origin == ORIGIN or record.state not in self._states:
            return
        clock = _clock._current
        with self._mutex:
            if record.version <= self._version:
                return
            self._version = record.version
            self._remote = True
            try:
                self._forced = record.forced
                if record.state == OPEN:
                    opened_wall = (
                        record.opened_at if record.opened_at is not None else (clock.time())
                    )
                    self._opened_mono = clock.monotonic() - max(0.0, clock.time() - opened_wall)
                    self._store.opened_at = datetime.fromtimestamp(opened_wall, UTC)
                self._move(record.state)
            finally:
                self._remote = False

    # --- manual use: callers that run the call and report its outcome themselves --------------

    def try_acquire(self) -> int | None:
        """Admit one call now without running it: a token for :meth:`record_success` or
        :meth:`record_failure` (0 when no trial permit was needed), or ``None`` when the
        circuit rejects the call."""
        try:
            return self._admit()
        except CircuitOpenError:
            return None

    def can_admit(self) -> bool:
        """Whether :meth:`try_acquire` would admit a call now (takes no permit)."""
        state = self._store.state
        if self._forced:
            return False
        if state == CLOSED:
            return True
        if state == OPEN:
            return _clock._current.monotonic() >= self._open_until
        return self._permits < self.half_open_max_calls

    def record_success(self, token: int = 0) -> None:
        """Record a call's success (``token``: from :meth:`try_acquire`)."""
        self._succeeded(0.0, token)

    def record_failure(self, exc: BaseException, token: int = 0) -> None:
        """Record a call's failure (``token``: from :meth:`try_acquire`)."""
        self._failed(exc, None, 0.0, token)

    # --- pybreaker's calling API and operator actions -----------------------------------------

    def call(self, func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """pybreaker's API: call ``func`` through this breaker (sync)."""
        if is_async_callable(func):
            raise TypeError(f"{func!r} is async: use ``await breaker.call_async(func, ...)``")
        return self._guarded_sync(self._enter(None, self._layer), func, *args, **kwargs)

    async def call_async(  # asyncio instead of pybreaker's tornado
        self, func: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any
    ) -> R:
        """Await ``func(*args, **kwargs)`` through this breaker, counting its outcome."""
        return await self._guarded_async(self._enter(None, self._layer), func, *args, **kwargs)

    acall = call_async
    """pybreaker's newer name for :meth:`call_async`."""

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """pybreaker's ``with breaker.calling():`` — guard a block of sync code."""
        call = self._enter(None, None)
        if call is None:
            yield
            return
        try:
            call.run(self.calling, (), {})
            yield
        except BaseException as exc:
            call.failed(exc)
            raise
        call.succeeded()

    def retry_after(self) -> float:
        """Seconds until the next trial call is allowed (0 when calls are let through)."""
        if self._forced:
            return float(self.reset_timeout)
        if self._store.state != OPEN:
            return 0.0
        return max(0.0, self._open_until - _clock._current.monotonic())

    def reset(self) -> None:
        """Close the circuit and clear its statistics (the operator's manual reset)."""
        with self._mutex:
            self._forced = False
            self._successes = self._failures = self._rejected = 0
            self._last_failure_category = None
            self._last_failure_at = None
            self._opened_mono = None
            self._outage_start = None
            self._store.reset_counter()
            if self._window is not None:
                self._window.reset()
            self._reach(CLOSED)

    def force_open(self) -> None:
        """Reject every call until :meth:`reset` (no trial calls)."""
        with self._mutex:
            self._forced = True
            if self._store.state == OPEN:
                self._open_until = math.inf
            self._reach(OPEN)

    def _reach(self, state: str) -> None:
        """An operator's action ends in ``state``: move there or, already there, refresh the
        fast path and publish what changed."""
        if self._store.state != state:
            self.open() if state == OPEN else self.close()
        else:
            self._refresh_fast()
            if self.shared:
                self._publish()

    def disable(self) -> None:
        """Let every call through without counting it, until :meth:`enable`."""
        with self._mutex:
            self._disabled = True
            self._refresh_fast()

    def enable(self) -> None:
        """Undo :meth:`disable`."""
        with self._mutex:
            self._disabled = False
            self._refresh_fast()

    def snapshot(self) -> BreakerSnapshot:
        """The breaker's state and statistics, read consistently."""
        self._refresh()
        with self._mutex:
            successes, failures = self._successes, self._failures
            total = successes + failures
            state = self._store.state
            opened = self._store.opened_at
            return BreakerSnapshot(
                name=self._key,
                state=state,
                failure_count=failures,
                success_count=successes,
                total_calls=total,
                success_rate=successes / total if total else 1.0,
                rejected_calls=self._rejected,
                consecutive_failures=self._store.counter,
                opened_at=opened.timestamp() if opened is not None and state != CLOSED else None,
                retry_after=self.retry_after(),
                last_failure_category=self._last_failure_category,
                last_failure_at=self._last_failure_at,
                last_recovery_seconds=self._last_recovery,
                disabled=self._disabled,
                forced_open=self._forced,
                shared=self.shared,
                failure_threshold=self.fail_max,
                reset_timeout=float(self.reset_timeout),
                half_open_max_calls=self.half_open_max_calls,
            )

    def __repr__(self) -> str:
        return f"<Breaker {self._key!r} {self._store.state}>"

    # --- decorating ---------------------------------------------------------------------------

    def decorate(
        self,
        fn: Callable[P, R],
        exclude: Callable[[BaseException], bool] | None = None,
    ) -> Callable[P, R]:
        """Wrap ``fn`` (sync or async, decided now) in this breaker."""
        cb = self
        sw = switches
        layer = Layer("breaker", self._key)

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            async def acall(*args: Any, **kwargs: Any) -> Any:
                if not (cb._fast and sw.breaker_enabled):
                    admitted = cb._begin(exclude, layer)
                    if isinstance(admitted, CircuitOpenError):
                        try:  # no cycle through this frame: a rejection leaves no garbage
                            raise admitted
                        finally:
                            del admitted
                    return await cb._guarded_async(admitted, afn, *args, **kwargs)
                try:
                    result = await afn(*args, **kwargs)
                except Exception as exc:
                    cb._failed(exc, exclude, 0.0, 0, layer)
                    raise
                cb._successes += 1
                return result

            return cast("Callable[P, R]", wrap(acall, fn, layer, breaker=cb))

        if inspect.isgeneratorfunction(fn):
            # The outcome is known when the generator ends: no fast path.
            def follow(*args: Any, **kwargs: Any) -> Any:
                return cb._guarded_sync(cb._enter(exclude, layer), fn, *args, **kwargs)

            return cast("Callable[P, R]", wrap(follow, fn, layer, breaker=cb))

        def call(*args: Any, **kwargs: Any) -> Any:
            if not (cb._fast and sw.breaker_enabled):
                admitted = cb._begin(exclude, layer)
                if isinstance(admitted, CircuitOpenError):
                    try:  # no cycle through this frame: a rejection leaves no garbage
                        raise admitted
                    finally:
                        del admitted
                return cb._guarded_sync(admitted, fn, *args, **kwargs)
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                cb._failed(exc, exclude, 0.0, 0, layer)
                raise
            cb._successes += 1
            return result

        return cast("Callable[P, R]", wrap(call, fn, layer, breaker=cb))


@dataclass(slots=True, eq=False)
class _Call:
    """One call past the fast path: its trial permits and start time, and how it settles.
    The sync and async shells (:meth:`Breaker._guarded_sync` / ``_guarded_async``) share it
    and only call or await the function."""

    cb: Breaker
    exclude: Callable[[BaseException], bool] | None
    layer: Layer | None
    permit: int
    cluster: bool = False
    running: bool = False
    settled: bool = False
    start: float = 0.0

    @property
    def wants_cluster(self) -> bool:
        """A half-open trial of a shared breaker also takes a cluster-wide permit."""
        cb = self.cb
        return bool(self.permit) and cb.shared and cb._backend is not None

    def grant(self, granted: bool | None) -> None:
        """The backend's answer to the cluster permit request (``None``: the store is
        unreachable, the local permit decides)."""
        if granted is False:  # another process holds every trial permit
            raise self.cb._reject(_clock._current.monotonic())
        self.cluster = granted is True

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """The function runs now: tell the listeners, then its outcome counts."""
        cb = self.cb
        if cb._listening:
            cb._notify("before_call", fn, *args, **kwargs)
        self.start = _clock._current.monotonic() if cb._window is not None else 0.0
        self.running = True

    def failed(self, exc: BaseException) -> None:
        """Record the function's error; an error before it ran (a refused permit, a listener)
        or a cancellation only gives the permits back."""
        self.settled = True
        if self.running and isinstance(exc, Exception):
            self.cb._failed(exc, self.exclude, self.start, self.permit, self.layer, self.cluster)
        else:
            self.give_back()

    def succeeded(self) -> None:
        """Record the function's success."""
        self.settled = True
        self.cb._succeeded(self.start, self.permit, self.cluster)

    def give_back(self) -> None:
        """Return the permits without an outcome."""
        if self.permit or self.cluster:
            with self.cb._mutex:
                self.cb._release(self.permit, self.cluster)
            self.permit, self.cluster = 0, False

    def abandoned(self) -> None:
        """A generator dropped before it finished: its permits go back."""
        if not self.settled:
            self.give_back()

    def follow(self, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        """Run ``gen`` to its end, then settle (as pybreaker: its end is the outcome)."""

        def follow() -> Generator[Any, Any, Any]:
            try:
                result = yield from gen
            except BaseException as exc:  # GeneratorExit: closed unfinished
                self.failed(exc)
                raise
            self.succeeded()
            return result

        outer = follow()
        if self.permit or self.cluster:
            weakref.finalize(outer, self.abandoned)  # dropped before its first step
        return outer


class BreakerRegistry:
    """Every breaker of the process, by name."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._breakers: dict[str, Breaker] = {}

    def get(self, name: str) -> Breaker:
        """The breaker called ``name``.

        Raises:
            KeyError: no breaker has that name (the message lists the known ones).
        """
        try:
            return self._breakers[name]
        except KeyError:
            known = ", ".join(sorted(self._breakers)) or "none yet"
            raise KeyError(f"no circuit breaker named {name!r} (known: {known})") from None

    def get_or_create(self, name: str, **options: Any) -> Breaker:
        """The breaker ``name``, created with ``options`` on first use."""
        explicit = {k: v for k, v in options.items() if v is not None}
        unknown = set(explicit) - set(_OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown breaker option(s): {', '.join(sorted(unknown))}")
        with self._lock:
            existing = self._breakers.get(name)
            if existing is None:
                created = Breaker(name, explicit)
                self._breakers[name] = created
                return created
        if explicit:
            existing._merge_options(explicit)
        return existing

    def names(self) -> list[str]:
        """Every breaker's name, sorted."""
        return sorted(self._breakers)

    def all(self) -> list[Breaker]:
        """Every breaker, sorted by name."""
        return [self._breakers[n] for n in self.names()]

    def snapshots(self) -> list[BreakerSnapshot]:
        """A snapshot of every breaker, sorted by name."""
        return [b.snapshot() for b in self.all()]

    def reset(self, name: str) -> None:
        """Close breaker ``name`` and clear its statistics."""
        self.get(name).reset()

    def force_open(self, name: str) -> None:
        """Hold breaker ``name`` open until reset."""
        self.get(name).force_open()

    def disable(self, name: str) -> None:
        """Let every call of breaker ``name`` through uncounted."""
        self.get(name).disable()

    def enable(self, name: str) -> None:
        """Undo :meth:`disable`."""
        self.get(name).enable()

    def remove(self, name: str) -> None:
        """Forget breaker ``name`` (decorated functions keep the object they hold)."""
        with self._lock:
            self._breakers.pop(name, None)

    def clear(self) -> None:
        """Forget every breaker (tests)."""
        with self._lock:
            self._breakers.clear()

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def _backend_changed(self, backend: SharedStateBackend | None) -> None:
        for cb in self.all():
            if cb.shared:
                cb._attach(backend)


breakers = BreakerRegistry()
"""The process's breaker registry."""
on_backend_change(breakers._backend_changed)


def get_breaker(name: str, **options: Any) -> Breaker:
    """The breaker ``name`` (created on first use with ``options``): the same object every
    ``@breaker(name)`` decoration uses."""
    return breakers.get_or_create(name, **options)


@overload
def breaker(
    name: str,
    *,
    failure_threshold: int | None = None,
    reset_timeout: float | timedelta | None = None,
    half_open_max_calls: int | None = None,
    success_threshold: int | None = None,
    exclude: ExcludeSpec = (),
    failure_rate_threshold: float | None = None,
    slow_call_duration: float | timedelta | None = None,
    slow_call_rate_threshold: float | None = None,
    window_size: float | None = None,
    window_type: Literal["count", "time"] | str = "count",
    minimum_calls: int | None = None,
    shared: bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def breaker(name: Callable[P, R], /) -> Callable[P, R]: ...


def breaker(
    name: str | Callable[P, R],
    *,
    failure_threshold: int | None = None,
    reset_timeout: float | timedelta | None = None,
    half_open_max_calls: int | None = None,
    success_threshold: int | None = None,
    exclude: ExcludeSpec = (),
    failure_rate_threshold: float | None = None,
    slow_call_duration: float | timedelta | None = None,
    slow_call_rate_threshold: float | None = None,
    window_size: float | None = None,
    window_type: Literal["count", "time"] | str = "count",
    minimum_calls: int | None = None,
    shared: bool | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]] | Callable[P, R]:
    """Guard a function with the circuit breaker ``name``.

    An open circuit raises :class:`~resilient.CircuitOpenError` without calling the function;
    the call that trips it raises its own error. Bare ``@breaker`` (no parentheses) names the
    breaker after the function (``module.qualname``) with every threshold from settings.

    Args:
        name: the breaker's name; every function naming it shares one breaker.
        failure_threshold: consecutive failures that open the circuit
            (``resilience.circuit_breaker_failure_threshold``).
        reset_timeout: seconds open before trial calls (``circuit_breaker_timeout``).
        half_open_max_calls: concurrent trial calls in half-open
            (``circuit_breaker_half_open_max_calls``).
        success_threshold: trial successes that close it (``circuit_breaker_success_threshold``).
        exclude: exception types/predicates that are business outcomes, not outages, for this
            function (they count as successes, as in pybreaker).
        failure_rate_threshold: also open when this share of the window's calls failed.
        slow_call_duration / slow_call_rate_threshold: calls slower than the duration count as
            slow; open when their share reaches the threshold (default 1.0).
        window_size / window_type / minimum_calls: the sliding window for both rates: the last
            N calls (``"count"``, default 100) or the last N seconds (``"time"``, default 60),
            evaluated once it holds ``minimum_calls`` calls.
        shared: keep state in Redis across processes (``resilience.circuit_breaker_shared``).

    Raises:
        ConfigError: ``shared`` without ``redis.url``.
        ValueError / TypeError: an invalid option (at decoration time).
    """
    options: dict[str, Any] = {
        "failure_threshold": failure_threshold,
        "reset_timeout": reset_timeout,
        "half_open_max_calls": half_open_max_calls,
        "success_threshold": success_threshold,
        "failure_rate_threshold": failure_rate_threshold,
        "slow_call_duration": slow_call_duration,
        "slow_call_rate_threshold": slow_call_rate_threshold,
        "window_size": window_size,
        "window_type": window_type if window_type != "count" else None,
        "minimum_calls": minimum_calls,
        "shared": shared,
    }
    if isinstance(name, classmethod | staticmethod | property):
        check_target(name, "@breaker")
    if callable(name) and not isinstance(name, str):  # bare @breaker
        fn = name
        return get_breaker(policy_name(fn), **options).decorate(fn)
    cb = get_breaker(name, **options)
    excluded = exception_matcher(
        _hooks.guard_spec(exclude, f"breaker {name!r}: exclude="), f"breaker {name!r}: exclude"
    )

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        check_target(fn, f"@breaker({name!r})")
        return cb.decorate(fn, excluded)

    return decorate
