"""resilient: circuit breakers, retries, fallbacks, timeouts and health for trading systems."""

from __future__ import annotations

# the Redis backend of shared=True breakers (state, cluster-wide counts and budgets) registers
# itself with the breakers when imported
from resilient._backends import shared_counts as _shared_counts  # noqa: F401
from resilient._core.cache_codec import register_cache_type
from resilient._core.clock import FakeClock, get_clock, set_clock, use_clock
from resilient._core.context import correlation_id
from resilient._core.deadline import deadline
from resilient._core.events import EventKind, PolicyEvent, PolicyHook, add_hook, remove_hook
from resilient._core.exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    ResilientError,
    RiskLimitError,
    TimeoutError,
    TradingDisabledError,
)
from resilient._core.log import disable_logging, enable_logging
from resilient._core.sanitize import sanitize
from resilient._core.version import __version__
from resilient._instrument import subscribers as _instrumentation
from resilient._policies.breaker import Breaker, BreakerSnapshot, breaker, breakers, get_breaker
from resilient._policies.bulkhead import (
    Bulkhead,
    BulkheadSnapshot,
    bulkhead,
    bulkheads,
    get_bulkhead,
)
from resilient._policies.cache import (
    CachedValue,
    FallbackCache,
    get_fallback_cache,
    set_fallback_cache,
)
from resilient._policies.compose import resilient
from resilient._policies.fallback import FallbackStatus, fallback, fallback_status
from resilient._policies.hedge import HedgeStats, hedge, hedge_stats
from resilient._policies.retry import retry
from resilient._policies.timeout import timeout
from resilient.errors import ErrorCategory, classify, record_error

__all__ = [
    "Breaker",
    "BreakerSnapshot",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadSnapshot",
    "CachedValue",
    "CircuitOpenError",
    "ConfigError",
    "ErrorCategory",
    "EventKind",
    "FakeClock",
    "FallbackCache",
    "FallbackStatus",
    "HedgeStats",
    "PolicyEvent",
    "PolicyHook",
    "ResilientError",
    "RiskLimitError",
    "TimeoutError",
    "TradingDisabledError",
    "__version__",
    "add_hook",
    "breaker",
    "breakers",
    "bulkhead",
    "bulkheads",
    "classify",
    "correlation_id",
    "deadline",
    "disable_logging",
    "enable_logging",
    "fallback",
    "fallback_status",
    "get_breaker",
    "get_bulkhead",
    "get_clock",
    "get_fallback_cache",
    "hedge",
    "hedge_stats",
    "record_error",
    "register_cache_type",
    "remove_hook",
    "resilient",
    "retry",
    "sanitize",
    "set_clock",
    "set_fallback_cache",
    "timeout",
    "use_clock",
]

_instrumentation.install()
