"""Forget process-wide state between tests: breakers, health, error counts, fallbacks, metrics.

Only parts that were imported hold state, so a module that is not in ``sys.modules`` is
skipped: resetting never imports (and never pays for) a part the test did not use.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["reset_state"]


def _loaded(name: str) -> Any:
    return sys.modules.get(name)


def reset_state() -> None:
    """Reset every registry of ``resilient`` that has been imported (for test isolation).

    Breakers are forgotten (functions decorated earlier keep their own breaker object, so
    decorate inside the test), retry budgets, fallback episodes and the in-process fallback
    cache are emptied, the health registry drops its checks (keeping the built-in breaker and
    fallback provider), and the error tracker, component statistics and metrics start at zero.
    """
    if (breaker := _loaded("resilient._breaker")) is not None:
        breaker.breakers.clear()
    if (retry := _loaded("resilient._retry")) is not None:
        for snapshot in retry.retry_budgets():
            retry.get_retry_budget(snapshot.name).reset()
    if (fallback := _loaded("resilient._fallback")) is not None:
        fallback.reset_fallback_status()
    if (cache := _loaded("resilient._cache")) is not None:
        clear = getattr(cache.get_fallback_cache(), "clear", None)
        if callable(clear):  # the in-process cache; a shared Redis cache is left alone
            clear()
    if (health := _loaded("resilient.health")) is not None:
        health.registry.reset()
    if (stats := _loaded("resilient.health._stats")) is not None:
        stats.reset_stats()
    if (errors := _loaded("resilient.errors")) is not None:
        errors.tracker.reset()
    if (metrics := _loaded("resilient.metrics")) is not None:
        metrics.reset()
