"""Trading integration: resilient broker and market-data proxies, risk limits, paper trading,
client-side rate limits.

Most users reach this through :class:`resilient.integration.ResilienceFactory`.
"""

from __future__ import annotations

from ._freshness import StaleDataError, TimedPrice
from ._orders import OrderIntent, new_client_order_id, prepare_order_call
from ._paper import PaperBroker, PaperOrder
from ._proxy import ResilientService
from ._ratelimit import RateLimitExceeded, ServiceRateLimiter
from ._risk import PositionBook, RiskChecker, RiskDecision
from ._settings import MethodPolicy, ServiceSettings, service_settings
from ._unknown import OrderStatusUnknown
from ._values import FallbackInfo, StalePrice, last_fallback

__all__ = [
    "FallbackInfo",
    "MethodPolicy",
    "OrderIntent",
    "OrderStatusUnknown",
    "PaperBroker",
    "PaperOrder",
    "PositionBook",
    "RateLimitExceeded",
    "ResilientService",
    "RiskChecker",
    "RiskDecision",
    "ServiceRateLimiter",
    "ServiceSettings",
    "StaleDataError",
    "StalePrice",
    "TimedPrice",
    "last_fallback",
    "new_client_order_id",
    "prepare_order_call",
    "service_settings",
]
