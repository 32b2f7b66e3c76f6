"""Forget process-wide state between tests: breakers, health, error counts, fallbacks, metrics.

Only parts that were imported hold state, so a module that is not in ``sys.modules`` is
skipped: resetting never imports (and never pays for) a part the test did not use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["reset_state"]


def _resetters() -> list[Callable[[], object]]:
    found: list[Callable[[], object]] = []

    def add(module_name: str, *path: str) -> None:
        obj: object = sys.modules.get(module_name)
        for attr in path:
            if obj is None:
                return
            obj = getattr(obj, attr, None)
        if callable(obj):
            found.append(obj)

    # breakers (policy): every breaker forgotten, fallback episodes and the cache emptied
    add("resilient._breaker", "breakers", "clear")
    add("resilient._breaker_registry", "breakers", "clear")
    add("resilient._fallback", "reset_fallback_status")
    add("resilient._cache", "get_fallback_cache", "__self__", "clear")
    add("resilient._cache", "reset_fallback_cache")
    # observability: the health registry, the error tracker, per-component stats, metrics
    add("resilient.health._registry", "registry", "reset")
    add("resilient.health", "registry", "reset")
    add("resilient.errors", "tracker", "reset")
    add("resilient.health._stats", "reset_stats")
    add("resilient.metrics", "reset")
    return found


def reset_state() -> None:
    """Reset every registry of ``resilient`` that has been imported (for test isolation)."""
    seen: set[int] = set()
    for reset in _resetters():
        key = id(getattr(reset, "__func__", reset)) ^ id(getattr(reset, "__self__", None))
        if key in seen:
            continue
        seen.add(key)
        reset()
