"""Forget process-wide state between tests: breakers, health, error counts, fallbacks, metrics.

Only parts that were imported hold state, so a module that is not in ``sys.modules`` is
skipped: resetting never imports (and never pays for) a part the test did not use.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["isolated_state", "reset_state"]


def _loaded(name: str) -> Any:
    return sys.modules.get(name)


def _breaker_names() -> set[str]:
    breaker = _loaded("resilient._policies.breaker")
    return set(breaker.breakers.names()) if breaker is not None else set()


def reset_state(*, forget_breakers: bool = False) -> None:
    """Reset every registry of ``resilient`` that has been imported (for test isolation).

    Every breaker is closed with its statistics cleared, so functions decorated at import time
    start each test (or hypothesis example) fresh; with ``forget_breakers`` they are also dropped
    from the registry, so a name can be decorated again with other options (a function decorated
    earlier keeps working with its own, now closed, breaker). Retry budgets,
    fallback episodes and the in-process fallback cache are emptied, the health registry drops
    its checks (keeping the built-in breaker and fallback provider), and the error tracker,
    component statistics and metrics start at zero.
    """
    if (breaker := _loaded("resilient._policies.breaker")) is not None:
        for cb in breaker.breakers.all():
            cb.reset()
        if forget_breakers:
            breaker.breakers.clear()
    if (bulkhead := _loaded("resilient._policies.bulkhead")) is not None:
        bulkhead.bulkheads.clear()
    if (hedge := _loaded("resilient._policies.hedge")) is not None:
        hedge._hedgers.clear()
    if (retry := _loaded("resilient._policies.retry")) is not None:
        for snapshot in retry.retry_budgets():
            retry.get_retry_budget(snapshot.name).reset()
    if (fallback := _loaded("resilient._policies.fallback")) is not None:
        fallback.reset_fallback_status()
    if (redis_cache := _loaded("resilient._backends.redis")) is not None:
        redis_cache.forget_default_cache(None)  # a test's Redis cache is not the next one's
    if (cache := _loaded("resilient._policies.cache")) is not None:
        clear = getattr(cache.get_fallback_cache(), "clear", None)
        if callable(clear):  # the in-process cache; a shared Redis cache is left alone
            clear()
    if (health := _loaded("resilient.health")) is not None:
        health.registry.reset()
    if (stats := _loaded("resilient._instrument.stats")) is not None:
        stats.reset_stats()
    if (errors := _loaded("resilient._instrument.tracker")) is not None:
        errors.tracker.reset()
    if (metrics := _loaded("resilient.metrics")) is not None:
        metrics.reset()


@contextmanager
def isolated_state() -> Iterator[None]:
    """Fresh state inside the block, and none of it left behind afterwards.

    Breakers that existed before the block are reset but stay registered (functions decorated
    at import time keep appearing in health and in ``breakers``); breakers created inside the
    block are forgotten when it ends.
    """
    before = _breaker_names()
    reset_state(forget_breakers=False)
    try:
        yield
    finally:
        reset_state(forget_breakers=False)
        if (breaker := _loaded("resilient._policies.breaker")) is not None:
            for name in _breaker_names() - before:
                breaker.breakers.remove(name)
