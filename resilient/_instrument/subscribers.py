"""The package's subscribers to the policy events, installed once by ``import resilient``.

=====================  ==========================================================
``call_failed``        error tracker (count, log once)
``fallback_served``    error tracker (count, no log), Prometheus, component stats
``breaker_state``      Prometheus
=====================  ==========================================================

The tracker's counted errors reach the Prometheus error counter through an error sink. Each
subscriber asks only for its kinds, so a retry builds no event unless some other hook wants it
(the log hook, which :mod:`resilient._core.events` holds from the start, asks only while logging is
enabled; retries are counted for Prometheus without an event).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from resilient import metrics
from resilient._core import events as _hooks
from resilient._core.events import EventKind
from resilient._instrument import stats as _stats
from resilient._instrument import tracker as _tracker

__all__ = ["install", "installed", "uninstall"]

_SUBSCRIBERS: tuple[tuple[_hooks.PolicyHook, tuple[EventKind, ...]], ...] = (
    (_tracker.on_call_failed, (EventKind.CALL_FAILED,)),
    (_tracker.on_fallback_served, (EventKind.FALLBACK_SERVED,)),
    (metrics.on_fallback_served, (EventKind.FALLBACK_SERVED,)),
    (metrics.on_breaker_state, (EventKind.BREAKER_STATE,)),
    (_stats.on_fallback_served, (EventKind.FALLBACK_SERVED,)),
)

_lock = threading.Lock()
_removers: list[Callable[[], None]] = []


def install() -> bool:
    """Subscribe the error tracker, Prometheus metrics and component statistics to the policy
    events, and metrics to the tracker's errors (idempotent; done by ``import resilient``).
    Returns ``True`` (the policy events are always available)."""
    with _lock:
        if not _removers:
            _removers.append(_tracker.add_error_sink(metrics.on_error))
            _removers.extend(_hooks.add_hook(hook, kinds=kinds) for hook, kinds in _SUBSCRIBERS)
    return True


def installed() -> bool:
    """Whether :func:`install` is in force."""
    return bool(_removers)


def uninstall() -> None:
    """Remove every subscriber :func:`install` added (benchmarks of the bare policies)."""
    with _lock:
        while _removers:
            _removers.pop()()
