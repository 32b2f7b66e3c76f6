"""resilient: circuit breakers, retries, fallbacks, timeouts and health for trading systems."""

from __future__ import annotations

from ._breaker import Breaker, BreakerSnapshot, breaker, breakers, get_breaker
from ._bulkhead import Bulkhead, BulkheadSnapshot, bulkhead, bulkheads, get_bulkhead
from ._cache import CachedValue, FallbackCache, get_fallback_cache, set_fallback_cache
from ._cache_codec import register_cache_type
from ._clock import FakeClock, get_clock, set_clock, use_clock
from ._compose import resilient
from ._context import correlation_id
from ._deadline import deadline
from ._exceptions import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    ResilientError,
    RiskLimitError,
    TimeoutError,
    TradingDisabledError,
)
from ._fallback import FallbackStatus, fallback, fallback_status
from ._hedge import HedgeStats, hedge, hedge_stats
from ._hooks import EventKind, PolicyEvent, PolicyHook, add_hook, remove_hook
from ._logging import disable_logging, enable_logging
from ._retry import retry
from ._sanitize import sanitize
from ._timeout import timeout
from .errors import ErrorCategory, classify, record_error

__version__ = "0.1.0"

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
