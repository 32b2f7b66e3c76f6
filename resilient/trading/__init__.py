"""Trading integration: resilient broker and market-data proxies, risk limits, paper trading,
client-side rate limits.

Most users reach this through :class:`resilient.integration.ResilienceFactory`.
"""

from __future__ import annotations

from resilient.trading._freshness import StaleDataError, TimedPrice
from resilient.trading._orders import OrderIntent, new_client_order_id, prepare_order_call
from resilient.trading._paper import PaperBroker, PaperOrder
from resilient.trading._proxy import ResilientService
from resilient.trading._ratelimit import RateLimitExceeded, ServiceRateLimiter
from resilient.trading._risk import PositionBook, RiskChecker, RiskDecision
from resilient.trading._settings import MethodPolicy, ServiceSettings, service_settings
from resilient.trading._unknown import OrderStatusUnknown
from resilient.trading._values import FallbackInfo, StalePrice, last_fallback

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
