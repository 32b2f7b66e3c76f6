"""resilient: circuit breakers, retries, fallbacks, timeouts and health for trading systems."""

from __future__ import annotations

from ._clock import FakeClock, get_clock, set_clock, use_clock
from ._context import correlation_id
from ._exceptions import (
    CircuitOpenError,
    ConfigError,
    ResilientError,
    RiskLimitError,
    TimeoutError,
    TradingDisabledError,
)
from ._logging import disable_logging, enable_logging
from ._sanitize import sanitize

__version__ = "0.1.0"

__all__ = [
    "CircuitOpenError",
    "ConfigError",
    "FakeClock",
    "ResilientError",
    "RiskLimitError",
    "TimeoutError",
    "TradingDisabledError",
    "__version__",
    "correlation_id",
    "disable_logging",
    "enable_logging",
    "get_clock",
    "sanitize",
    "set_clock",
    "use_clock",
]
