"""Error taxonomy, correlation ids and the error tracker.

``classify(exc)`` names the kind of a failure (:class:`ErrorCategory`); the tracker counts each
failing exception once — however many layers see it — by category and component, keeps a rolling
error rate for alerts, and logs the error once with its correlation id and a sanitized message.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resilient import metrics
from resilient._core import clock as _clock
from resilient._core.classify import (
    ErrorCategory,
    classify,
    is_transient,
    proves_not_sent,
    register_classifier,
    retry_after,
)
from resilient._core.context import correlation_id, current_correlation_id, new_correlation_id
from resilient._core.log import logger
from resilient._core.sanitize import sanitize

__all__ = [
    "ErrorCategory",
    "ErrorRecord",
    "ErrorTracker",
    "classify",
    "correlation_id",
    "current_correlation_id",
    "install_hooks",
    "is_transient",
    "proves_not_sent",
    "record_error",
    "register_classifier",
    "retry_after",
    "tracker",
]

_MARK = "__resilient_error_recorded__"
DEFAULT_WINDOW = 60.0
_RECENT = 50
# Exceptions that refuse attributes (a frozen dataclass, a ``__setattr__`` that raises) are
# remembered themselves, not by id: a freed exception's id is soon reused by the next one, which
# would then never be counted. Bounded (the layers of one call see the same exception within a
# few steps), so a flood of them holds at most this many alive.
_ID_MEMORY = 64


@dataclass(frozen=True, slots=True)
class ErrorRecord:
    """One counted error."""

    category: ErrorCategory
    component: str | None
    correlation_id: str
    error_type: str
    message: str
    timestamp: float
    monotonic: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (the message is already sanitized)."""
        return {
            "category": self.category.value,
            "component": self.component,
            "correlation_id": self.correlation_id,
            "error_type": self.error_type,
            "message": self.message,
            "timestamp": self.timestamp,
        }


class ErrorTracker:
    """Counts errors by category and component and keeps a rolling error rate.

    The rate is errors per operation over ``window`` seconds::

        error_rate = errors in the window / max(operations in the window, errors)

    where operations are the calls that reached a service: counted without touching the
    success path, :meth:`sample` (called on every health cycle) reads cumulative call
    counters — the breakers' ``total_calls`` by default — and :meth:`record_calls` adds calls
    made outside any breaker. Calls an open circuit refused (``CircuitOpenError``) are neither
    errors nor operations: they are counted in their own series (``circuit_open_rejections``)
    and never logged one by one, so an open circuit cannot raise the high-error-rate alarm by
    itself.
    """

    def __init__(
        self,
        *,
        window: float = DEFAULT_WINDOW,
        clock: _clock.Clock | None = None,
        call_counter: Callable[[], int] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.window = window
        self._call_counter = call_counter if call_counter is not None else _sum_breaker_calls
        self._seen: deque[BaseException] = deque(maxlen=_ID_MEMORY)
        self.reset()

    def reset(self) -> None:
        """Forget every count, sample and record."""
        with self._lock:
            self.total_errors = 0
            self.rejections = 0
            self.rejections_by_component: Counter[str] = Counter()
            self.by_category: Counter[str] = Counter()
            self.by_component: Counter[str] = Counter()
            self.recent: deque[ErrorRecord] = deque(maxlen=_RECENT)
            # [second, count] buckets: bounded memory under an error storm
            self._buckets: deque[list[int]] = deque()
            self._in_window = 0
            # a fresh mark per tracker and reset: "already counted" means counted *here*
            self._token = object()
            self._extra_calls = 0
            # (monotonic, cumulative operations) samples within the window
            # The baseline: cumulative counters start at zero, so "since the start" is exact.
            self._samples: deque[tuple[float, int]] = deque([(float("-inf"), 0)])
            self._seen.clear()

    def _now(self) -> _clock.Clock:
        return self._clock if self._clock is not None else _clock._current

    def _first_sighting(self, exc: BaseException) -> bool:
        try:
            if getattr(exc, _MARK, None) is self._token:
                return False
            setattr(exc, _MARK, self._token)
            if getattr(exc, _MARK, None) is self._token:
                return True
        except Exception:  # slots, or attribute access that raises
            pass
        if any(seen is exc for seen in self._seen):  # the mark cannot be kept on this object
            return False
        self._seen.append(exc)
        return True

    def record(
        self, exc: BaseException, *, component: str | None = None, log: bool = True
    ) -> ErrorRecord | None:
        """Count, classify and log ``exc`` once; ``None`` if this object was already counted.

        A circuit-open rejection is not an error of the service: it is counted in
        ``rejections`` (by component), neither logged nor part of the error rate, and
        ``None`` is returned.

        Never raises: error accounting must not turn one failure into two.
        """
        try:
            with self._lock:
                if not self._first_sighting(exc):
                    return None
            try:
                category = classify(exc)
            except Exception:
                category = ErrorCategory.INTERNAL
            if category is ErrorCategory.CIRCUIT_OPEN:
                with self._lock:
                    self.rejections += 1
                    if component:
                        self.rejections_by_component[component] += 1
                return None
            clock = self._now()
            # read, never set: setting it here would leak the id into unrelated later work
            cid = current_correlation_id() or new_correlation_id()
            record = ErrorRecord(
                category=category,
                component=component,
                correlation_id=cid,
                error_type=type(exc).__name__,
                message=sanitize(exc),
                timestamp=clock.time(),
                monotonic=clock.monotonic(),
            )
            with self._lock:
                self.total_errors += 1
                self.by_category[category.value] += 1
                if component:
                    self.by_component[component] += 1
                self.recent.append(record)
                second = int(record.monotonic // 1)
                if self._buckets and self._buckets[-1][0] == second:
                    self._buckets[-1][1] += 1
                else:
                    self._buckets.append([second, 1])
                self._in_window += 1
                self._trim(record.monotonic)
            if log:
                _log(record, exc)
            _export_error(category)
            return record
        except Exception:  # pragma: no cover - defensive: accounting never raises
            return None

    def record_calls(self, n: int = 1) -> None:
        """Count ``n`` operations made outside any breaker (the error rate's denominator)."""
        with self._lock:
            self._extra_calls += n

    def _operations(self) -> int:
        try:
            calls = int(self._call_counter())
        except Exception:
            calls = 0
        return calls + self._extra_calls

    def _trim(self, now: float) -> None:
        horizon = now - self.window
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            self._in_window -= self._buckets.popleft()[1]
        # keep one sample at or before the horizon as the window's baseline
        while len(self._samples) > 1 and self._samples[1][0] <= horizon:
            self._samples.popleft()

    def sample(self) -> None:
        """Record the cumulative operation count now (call once per health cycle)."""
        now = self._now().monotonic()
        ops = self._operations()
        with self._lock:
            self._samples.append((now, ops))
            self._trim(now)

    def error_rate(self) -> float:
        """Errors per operation over the rolling window, in [0, 1] (0.0 with no traffic)."""
        now = self._now().monotonic()
        ops_now = self._operations()
        with self._lock:
            self._trim(now)
            errors = self._in_window
            if self._samples and self._samples[0][0] <= now:
                baseline = self._samples[0][1]
            else:
                baseline = ops_now
            calls = max(ops_now - baseline, 0)
        if errors == 0:
            return 0.0
        # an error whose call was not counted still is an operation
        return min(1.0, errors / max(calls, errors))

    def errors_in_window(self) -> int:
        """Errors recorded within the rolling window."""
        with self._lock:
            self._trim(self._now().monotonic())
            return self._in_window

    def snapshot(self, *, recent: int = 10) -> dict[str, Any]:
        """Counts, rate and the latest records, JSON-serialisable."""
        rate = self.error_rate()
        with self._lock:
            latest = list(self.recent)[-recent:] if recent > 0 else []
            return {
                "total_errors": self.total_errors,
                "by_category": dict(self.by_category),
                "by_component": dict(self.by_component),
                "error_rate": rate,
                "errors_in_window": self._in_window,
                "circuit_open_rejections": {
                    "total": self.rejections,
                    "by_component": dict(self.rejections_by_component),
                },
                "window_seconds": self.window,
                "recent": [r.to_dict() for r in latest],
            }


def _log(record: ErrorRecord, exc: BaseException) -> None:
    where = f" in {record.component}" if record.component else ""
    bound = logger.bind(
        correlation_id=record.correlation_id,
        category=record.category.value,
        error_type=record.error_type,
    )
    text = "{} error{}: {}: {}"
    args = (record.category.value, where, record.error_type, record.message)
    if is_transient(exc):
        bound.warning(text, *args)
    else:
        bound.error(text, *args)


def _sum_breaker_calls() -> int:
    # Calls that reached a function: the calls an open circuit refused are no operations of
    # the service (and no errors either; see ErrorTracker).
    try:
        from resilient.health._sources import breaker_snapshots

        return sum(int(getattr(s, "total_calls", 0) or 0) for s in breaker_snapshots())
    except Exception:
        return 0


def _export_error(category: ErrorCategory) -> None:
    metrics._count_error(category.value)


tracker = ErrorTracker()

_hook_remover: Callable[[], None] | None = None
_hook_lock = threading.Lock()


def _on_policy_event(event: Any) -> None:
    """Count final errors, and feed metrics and call statistics, from policy events.

    Retries are not delivered here: they are counted by the policy itself
    (:func:`resilient._core.events.count_retry`), so a retry builds no event for this hook."""
    kind = str(getattr(event, "kind", ""))
    name = str(getattr(event, "name", "") or "")
    exc = getattr(event, "exception", None)
    if kind == "call_failed" and isinstance(exc, BaseException):
        tracker.record(exc, component=name or None)
    elif kind == "fallback_served" and isinstance(exc, BaseException):
        # counted, not logged: the fallback's episode is logged once (a WARNING) by the log hook
        tracker.record(exc, component=name or None, log=False)
    if kind == "fallback_served":
        source = str(getattr(event, "source", None) or "value")
        metrics.record_fallback(name, source)
        elapsed = getattr(event, "elapsed", None)
        if source == "cache" and name and isinstance(elapsed, int | float):
            from resilient._instrument.stats import stats

            stats(name).record_cached(float(elapsed))
    elif kind == "breaker_state":
        metrics.record_transition(name, str(getattr(event, "new_state", "") or ""))


def install_hooks() -> bool:
    """Subscribe the tracker, metrics and call statistics to the policy events (once).

    Done at import; returns whether the policy hooks are available.
    """
    global _hook_remover
    with _hook_lock:
        if _hook_remover is not None:
            return True
        try:
            from resilient._core.events import EventKind, add_hook
        except ImportError:  # pragma: no cover - the policy layer ships with the package
            return False
        _hook_remover = add_hook(
            _on_policy_event,
            kinds=(EventKind.CALL_FAILED, EventKind.FALLBACK_SERVED, EventKind.BREAKER_STATE),
        )
        return True


install_hooks()


def record_error(exc: BaseException, *, component: str | None = None) -> ErrorRecord | None:
    """Count, classify and log ``exc`` once in the process tracker (see :class:`ErrorTracker`)."""
    return tracker.record(exc, component=component)
