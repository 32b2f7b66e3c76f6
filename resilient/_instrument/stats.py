"""Per-component success metrics over a rolling window: availability, error rate, p95 latencies.

Feeds, cheapest first: breaker counters sampled once per health cycle (no cost per call),
health-check results, fallback events (cached reads), and explicit :meth:`ComponentStats.record`
calls from code that already does work per call (service proxies).
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any

from resilient._core import clock as _clock
from resilient._core.events import PolicyEvent

__all__ = [
    "DEFAULT_WINDOW",
    "ComponentStats",
    "all_stats",
    "on_fallback_served",
    "p95",
    "reset_stats",
    "stats",
]

DEFAULT_WINDOW = 300.0
_MAX_POINTS = 4096


def p95(values: list[float]) -> float | None:
    """The 95th percentile by nearest rank (``None`` for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return ordered[rank - 1]


class ComponentStats:
    """Rolling-window statistics of one component (thread-safe; append-only per event)."""

    __slots__ = ("_breaker", "_cached", "_calls", "_checks", "_lock", "name", "window")

    def __init__(self, name: str, window: float = DEFAULT_WINDOW) -> None:
        self.name = name
        self.window = window
        self._lock = threading.Lock()
        self._calls: deque[tuple[float, bool, float]] = deque(maxlen=_MAX_POINTS)
        self._cached: deque[tuple[float, float]] = deque(maxlen=_MAX_POINTS)
        self._checks: deque[tuple[float, bool, float]] = deque(maxlen=_MAX_POINTS)
        # (time, total_calls, failure_count, rejected_calls): cumulative breaker counters
        # Counters start at zero, so an implicit first sample makes the first delta exact.
        self._breaker: deque[tuple[float, int, int, int]] = deque(
            [(float("-inf"), 0, 0, 0)], maxlen=_MAX_POINTS
        )

    @staticmethod
    def _now() -> float:
        return _clock._current.monotonic()

    def record(self, ok: bool, seconds: float) -> None:
        """One call: whether it succeeded and how long it took."""
        self._calls.append((self._now(), ok, seconds))

    def record_cached(self, seconds: float) -> None:
        """One answer served from the fallback cache and how long the caller waited for it."""
        self._cached.append((self._now(), seconds))

    def record_check(self, up: bool, seconds: float) -> None:
        """One health-check result (up = not unhealthy)."""
        self._checks.append((self._now(), up, seconds))

    def record_breaker(self, total_calls: int, failures: int, rejected: int) -> None:
        """A sample of the breaker's cumulative counters."""
        self._breaker.append((self._now(), total_calls, failures, rejected))

    def _trim(self, horizon: float) -> None:
        for series in (self._calls, self._cached, self._checks):
            while series and series[0][0] < horizon:
                series.popleft()
        # keep one breaker sample at or before the horizon as the window's baseline
        while len(self._breaker) > 1 and self._breaker[1][0] <= horizon:
            self._breaker.popleft()

    def summary(self, last_recovery_seconds: float | None = None) -> dict[str, Any]:
        """``availability``, ``error_rate``, ``p95_latency_ms``, ``p95_cached_latency_ms``,
        ``calls``, ``last_recovery_seconds`` and ``window_seconds`` (``None`` = no data)."""
        with self._lock:
            self._trim(self._now() - self.window)
            calls = list(self._calls)
            cached = [s for _, s in self._cached]
            checks = list(self._checks)
            breaker = list(self._breaker)
        availability: float | None = None
        error_rate: float | None = None
        latencies: list[float] = []
        count = 0
        if calls:
            count = len(calls)
            ok = sum(1 for _, good, _ in calls if good)
            availability = ok / count
            error_rate = 1.0 - availability
            latencies = [s for _, _, s in calls]
        elif len(breaker) >= 2:
            _, t0, f0, r0 = breaker[0]
            _, t1, f1, r1 = breaker[-1]
            reached, failed, rejected = t1 - t0, f1 - f0, r1 - r0
            if reached >= 0 and failed >= 0 and rejected >= 0 and reached + rejected > 0:
                count = reached + rejected
                availability = (reached - failed) / count
                error_rate = failed / reached if reached else 0.0
        if availability is None and checks:
            count = len(checks)
            availability = sum(1 for _, up, _ in checks if up) / count
        if not latencies:
            latencies = [s for _, _, s in checks]
        p95_calls = p95(latencies)
        p95_cached = p95(cached)
        return {
            "availability": None if availability is None else round(availability, 6),
            "error_rate": None if error_rate is None else round(error_rate, 6),
            "p95_latency_ms": None if p95_calls is None else round(p95_calls * 1000.0, 3),
            "p95_cached_latency_ms": None if p95_cached is None else round(p95_cached * 1000, 3),
            "samples": count,
            "cached_reads": len(cached),
            "last_recovery_seconds": last_recovery_seconds,
            "window_seconds": self.window,
        }


_stats: dict[str, ComponentStats] = {}
_stats_lock = threading.Lock()


def stats(name: str) -> ComponentStats:
    """The statistics of component ``name`` (created on first use)."""
    found = _stats.get(name)
    if found is not None:
        return found
    with _stats_lock:
        return _stats.setdefault(name, ComponentStats(name))


def all_stats() -> dict[str, ComponentStats]:
    """Every component's statistics."""
    return dict(_stats)


def reset_stats() -> None:
    """Forget every component's statistics (tests)."""
    with _stats_lock:
        _stats.clear()


def on_fallback_served(event: PolicyEvent) -> None:
    """Subscriber to ``fallback_served``: a cached answer and how long the caller waited."""
    if event.source == "cache" and event.name:
        stats(event.name).record_cached(event.elapsed)
