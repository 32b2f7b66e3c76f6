"""OpenTelemetry metrics and spans (extra ``otel``: ``pip install "resilient[otel]"``).

Importing ``resilient`` never imports this module. :func:`install` subscribes to the policy
events (:func:`resilient.add_hook`), which are built only on failure paths, so a call that
succeeds costs exactly what it cost before. Instruments of the meter ``resilient``, following
Polly's structure:

* ``resilient.strategy.events`` (counter, read at collection): every policy event, with
  ``event.name``, ``service``, ``strategy``, ``operation`` and ``error.type``;
* ``resilient.circuit_breaker.state`` (gauge): 1 for each breaker's current ``state``, else 0;
* ``resilient.retries`` (counter): retries by ``service``, ``retry.attempt``, ``error.type``;
* ``resilient.pipeline.duration`` / ``resilient.attempt.duration`` (histograms, seconds): whole
  calls of :func:`traced` and attempts of :func:`attempts`, with ``durations=True`` only.

Spans come from :func:`traced` (one per logical call) and :func:`attempts` (one child per
attempt, with ``http.request.resend_count``); :func:`instrument` builds both around
:func:`resilient.resilient`. The events of a call are added to its current span: ``retry``,
``breaker_state``, ``fallback_served`` (with ``fallback.source`` and ``fallback.age``),
``rate_limited``, ``hedge``, ``bulkhead_rejected``. Attributes never carry call arguments or
exception messages (only the exception's class), so no secret can reach a span.
"""

from __future__ import annotations

import contextlib as _contextlib
import contextvars as _contextvars
import functools as _functools
import threading as _threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, ParamSpec, TypeVar, cast

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError as _missing:  # pragma: no cover - depends on the installation
    raise ImportError(
        'resilient.otel needs OpenTelemetry: pip install "resilient[otel]" '
        "(opentelemetry-api and opentelemetry-sdk)"
    ) from _missing

from resilient._core import clock as _clock
from resilient._core import events as _hooks
from resilient._core.events import EventKind as _EventKind
from resilient._core.events import PolicyEvent as _PolicyEvent
from resilient._core.wrapping import is_async_callable as _is_async_callable
from resilient._core.wrapping import policy_name as _policy_name
from resilient._policies.breaker import breakers as _breakers
from resilient._policies.compose import resilient as _resilient

__all__ = ["Telemetry", "attempts", "install", "installed", "instrument", "traced", "uninstall"]

P = ParamSpec("P")
R = TypeVar("R")

_SCOPE = "resilient"
_STATES = ("closed", "open", "half-open")
_STRATEGY = {
    _EventKind.RETRY: "retry",
    _EventKind.RETRY_BUDGET_EXHAUSTED: "retry",
    _EventKind.BREAKER_STATE: "circuit_breaker",
    _EventKind.CALL_FAILED: "pipeline",
    _EventKind.FALLBACK_SERVED: "fallback",
    _EventKind.FALLBACK_RECOVERED: "fallback",
    _EventKind.BULKHEAD_REJECTED: "bulkhead",
    _EventKind.RATE_LIMITED: "rate_limiter",
    _EventKind.HEDGE: "hedging",
}


class _Call:
    """The logical call in progress (set by :func:`traced`): its operation and attempt count."""

    __slots__ = ("attempts", "operation")

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.attempts = 0


_current: _contextvars.ContextVar[_Call | None] = _contextvars.ContextVar(
    "resilient_otel_call", default=None
)


def _end_span(span: Any, exc: BaseException | None) -> None:
    """End ``span``, marked as an error of ``exc``'s type when the call failed."""
    if exc is not None:
        span.set_attribute("error.type", _error_type(exc))
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, type(exc).__name__))
    span.end()


def _error_type(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


class Telemetry:
    """What :func:`install` set up: the instruments, and the hook feeding them."""

    def __init__(
        self,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        *,
        durations: bool = False,
    ) -> None:
        meter = (meter_provider or _metrics.get_meter_provider()).get_meter(_SCOPE)
        self.tracer = (tracer_provider or _trace.get_tracer_provider()).get_tracer(_SCOPE)
        self.durations = durations
        # Events are counted here and read by the SDK at collection time: adding to an SDK
        # counter per event cleans and hashes its attributes (~10 µs), a dict count does not.
        self._counts: dict[tuple[str, str, str, str, str], int] = {}
        self._counts_lock = _threading.Lock()
        meter.create_observable_counter(
            "resilient.strategy.events",
            callbacks=[self._event_counts],
            unit="{event}",
            description="Resilience events (retries, breaker transitions, fallbacks, ...)",
        )
        self.pipeline_duration = meter.create_histogram(
            "resilient.pipeline.duration", unit="s", description="Duration of whole calls"
        )
        self.attempt_duration = meter.create_histogram(
            "resilient.attempt.duration", unit="s", description="Duration of each attempt"
        )
        meter.create_observable_gauge(
            "resilient.circuit_breaker.state",
            callbacks=[_breaker_states],
            description="1 for the breaker's current state, 0 for the others",
        )
        meter.create_observable_counter(
            "resilient.retries",
            callbacks=[_retry_counts],
            unit="{retry}",
            description="Retries scheduled, by service, attempt and error type",
        )
        self._remove: Callable[[], None] | None = None

    def __call__(self, event: _PolicyEvent) -> None:
        """The hook: count the event, and add it to the current span."""
        kind = event.kind
        call = _current.get()
        name = kind.value
        if kind is _EventKind.BREAKER_STATE:
            name = f"circuit_{event.new_state}"
        error = _error_type(event.exception)
        key = (
            name,
            event.name,
            _STRATEGY.get(kind, kind.value),
            call.operation if call is not None else "",
            error,
        )
        with self._counts_lock:
            self._counts[key] = self._counts.get(key, 0) + 1
        span = _trace.get_current_span()
        if not span.is_recording():
            return
        details: dict[str, Any] = {"service": event.name}
        if error:
            details["error.type"] = error
        if kind is _EventKind.RETRY:
            details.update({"retry.attempt": event.attempt, "retry.wait": event.wait})
        elif kind is _EventKind.BREAKER_STATE:
            details.update(
                {"circuit.old_state": event.old_state or "", "circuit.state": event.new_state or ""}
            )
        elif kind is _EventKind.FALLBACK_SERVED:
            details["fallback.source"] = event.source or ""
            if event.cache_age is not None:
                details["fallback.age"] = float(event.cache_age)
        elif kind is _EventKind.RATE_LIMITED:
            details["rate_limit.wait"] = event.wait
        elif kind is _EventKind.HEDGE:
            details.update({"hedge.request": event.attempt, "hedge.after": event.elapsed})
        span.add_event(kind.value, details)

    def _event_counts(self, options: Any) -> Iterable[Any]:
        from opentelemetry.metrics import Observation

        with self._counts_lock:
            counts = list(self._counts.items())
        for (name, service, strategy, operation, error), count in counts:
            attributes = {
                "event.name": name,
                "service": service,
                "strategy": strategy,
                "operation": operation,
            }
            if error:
                attributes["error.type"] = error
            yield Observation(count, attributes)

    def uninstall(self) -> None:
        """Stop receiving events."""
        remove, self._remove = self._remove, None
        if remove is not None:
            remove()


def _breaker_states(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    for snap in _breakers.snapshots():
        current = str(getattr(snap, "state", ""))
        for state in _STATES:
            yield Observation(
                1 if state == current else 0, {"service": str(snap.name), "state": state}
            )


def _retry_counts(options: Any) -> Iterable[Any]:
    from opentelemetry.metrics import Observation

    totals: dict[tuple[str, int, str], int] = {}
    for (name, attempt, exc_type), count in _hooks.retry_counts().items():
        error = "" if exc_type is None else exc_type.__name__
        key = (name, attempt, error)
        totals[key] = totals.get(key, 0) + count
    for (name, attempt, error), count in totals.items():
        yield Observation(count, {"service": name, "retry.attempt": attempt, "error.type": error})


_lock = _threading.Lock()
_installed: Telemetry | None = None


def install(
    meter_provider: Any = None, tracer_provider: Any = None, *, durations: bool = False
) -> Telemetry:
    """Feed the policy events to OpenTelemetry (the global providers unless given).

    Args:
        meter_provider / tracer_provider: where the meter and tracer ``resilient`` come from.
        durations: record the duration histograms in :func:`traced` / :func:`attempts`
            (the spans are recorded either way).

    Returns:
        The :class:`Telemetry` installed; a second call replaces the first.
    """
    global _installed
    telemetry = Telemetry(meter_provider, tracer_provider, durations=durations)
    with _lock:
        if _installed is not None:
            _installed.uninstall()
        telemetry._remove = _hooks.add_hook(
            telemetry, kinds=[k for k in _EventKind if k is not _EventKind.FALLBACK_RECOVERED]
        )
        _installed = telemetry
    return telemetry


def uninstall() -> None:
    """Undo :func:`install`."""
    global _installed
    with _lock:
        if _installed is not None:
            _installed.uninstall()
        _installed = None


def installed() -> Telemetry | None:
    """The telemetry in force (``None`` before :func:`install`)."""
    return _installed


def traced(
    name: str | None = None, *, operation: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """One span per logical call (outermost), named ``operation`` (default: the function's
    name), with ``service`` = ``name``; an error sets the span's status and ``error.type``.
    Nothing is recorded before :func:`install`."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        service = name or _policy_name(fn)
        op: str = operation or str(getattr(fn, "__name__", service))
        attributes = {"service": service, "operation": op}

        def start() -> tuple[Any, Any, float]:
            telemetry = _installed
            if telemetry is None:
                return None, None, 0.0
            span = telemetry.tracer.start_span(op, attributes=attributes)
            return telemetry, span, _clock._current.monotonic()

        def finish(telemetry: Any, span: Any, started: float, exc: BaseException | None) -> None:
            _end_span(span, exc)
            if telemetry.durations:
                seconds = _clock._current.monotonic() - started
                telemetry.pipeline_duration.record(
                    seconds, {**attributes, "error.type": _error_type(exc)}
                )

        @_contextlib.contextmanager
        def scope() -> Iterator[None]:
            token = _current.set(_Call(op))
            try:
                yield
            finally:
                _current.reset(token)

        return _spanned(fn, start, finish, scope)

    return decorate


def attempts(name: str | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A child span per attempt (put it inside ``@retry``): ``http.request.resend_count`` is
    the attempt's number minus one (set from the second attempt on, as the semantic
    conventions ask)."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        service = name or _policy_name(fn)
        base = f"{getattr(fn, '__name__', service)} attempt"

        def start() -> tuple[Any, Any, float]:
            telemetry = _installed
            if telemetry is None:
                return None, None, 0.0
            call = _current.get()
            resend = 0
            if call is not None:
                resend = call.attempts
                call.attempts += 1
            attributes: dict[str, Any] = {"service": service}
            if resend:
                attributes["http.request.resend_count"] = resend
            span = telemetry.tracer.start_span(base, attributes=attributes)
            return telemetry, span, _clock._current.monotonic()

        def finish(telemetry: Any, span: Any, started: float, exc: BaseException | None) -> None:
            _end_span(span, exc)
            if telemetry.durations:
                telemetry.attempt_duration.record(
                    _clock._current.monotonic() - started,
                    {"service": service, "error.type": _error_type(exc)},
                )

        return _spanned(fn, start, finish, _contextlib.nullcontext)

    return decorate


def instrument(name: str, **options: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """:func:`resilient.resilient` with spans: ``traced(resilient(attempts(fn)))``.
    ``options`` go to :func:`resilient.resilient`."""
    stack = _resilient(name, **options)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        inner = attempts(name)(fn)
        return traced(name, operation=getattr(fn, "__name__", name))(stack(inner))

    return decorate


_Start = Callable[[], tuple[Any, Any, float]]
_Finish = Callable[[Any, Any, float, "BaseException | None"], None]


def _spanned(
    fn: Callable[P, R],
    start: _Start,
    finish: _Finish,
    scope: Callable[[], _contextlib.AbstractContextManager[Any]],
) -> Callable[P, R]:
    """``fn`` run in a span: ``start()`` opens it (``None`` first while tracing is off),
    ``scope()`` is entered around the call, ``finish(...)`` ends the span with the outcome."""

    @_contextlib.contextmanager
    def spanned(telemetry: Any, span: Any, started: float) -> Iterator[None]:
        try:
            with scope(), _trace.use_span(span, end_on_exit=False, record_exception=False):
                yield
        except BaseException as exc:
            finish(telemetry, span, started, exc)
            raise
        finish(telemetry, span, started, None)

    def opened() -> _contextlib.AbstractContextManager[None]:
        telemetry, span, started = start()
        return _OFF if telemetry is None else spanned(telemetry, span, started)

    if _is_async_callable(fn):
        afn = cast("Callable[..., Awaitable[Any]]", fn)

        async def acall(*args: Any, **kwargs: Any) -> Any:
            scope = opened()
            if scope is _OFF:  # not installed: no context manager on the call's path
                return await afn(*args, **kwargs)
            with scope:
                return await afn(*args, **kwargs)

        return cast("Callable[P, R]", _copy_meta(acall, fn))

    def call(*args: Any, **kwargs: Any) -> Any:
        scope = opened()
        if scope is _OFF:
            return fn(*args, **kwargs)
        with scope:
            return fn(*args, **kwargs)

    return cast("Callable[P, R]", _copy_meta(call, fn))


_OFF = _contextlib.nullcontext()


def _copy_meta(wrapper: Any, fn: Any) -> Any:
    with _contextlib.suppress(AttributeError, TypeError):  # exotic callables: copy what can be
        _functools.update_wrapper(wrapper, fn)
    return wrapper
