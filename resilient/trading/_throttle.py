"""The order-rate throttle, a risk rule: ``trading.max_order_rate`` per service.

It contains a runaway strategy loop whatever the vendor's API quota: an order over the rate is
refused at once with :class:`~resilient.RiskLimitError` (rule ``trading.max_order_rate``), never
queued. Counted with the ``limits`` library (moving window), in process or, when ``redis.url``
is set, in Redis so that every worker shares one rate per service. When Redis is unreachable
it keeps counting in process memory: a throttle that fails open would be no risk rule.
"""

from __future__ import annotations

import threading
from typing import Any

from limits import RateLimitItem, parse_many
from limits import storage as sync_storage
from limits import strategies as sync_strategies

from resilient._core.exceptions import RiskLimitError
from resilient._core.log import logger
from resilient._core.redis_url import limits_storage

__all__ = ["OrderThrottle"]


class OrderThrottle:
    """The order rate of one service.

    Args:
        name: the service.
        spec: ``limits`` notation, e.g. ``"20/second"`` or ``"20/second; 500/minute"``.
        redis_url: share the count through this Redis (``None``: in process).
        key_prefix: prefix of the Redis keys.
        timeout: socket timeout of the Redis client.
    """

    def __init__(
        self,
        name: str,
        spec: str,
        *,
        redis_url: str | None = None,
        key_prefix: str = "resilient",
        timeout: float = 0.1,
    ) -> None:
        self.name = name
        self.spec = spec
        self.items: list[RateLimitItem] = list(parse_many(spec))
        self.key = f"orders:{name}"
        self._lock = threading.Lock()
        self._memory = sync_strategies.MovingWindowRateLimiter(sync_storage.MemoryStorage())
        self._redis: Any = None
        self.degraded = ""  # why the rate is counted in memory although Redis is configured
        if redis_url:
            try:
                uri, extra = limits_storage(redis_url)  # cluster / Sentinel forms too
                store = sync_storage.storage_from_string(
                    uri,
                    key_prefix=f"{key_prefix}:orderrate",
                    socket_timeout=max(timeout, 0.05),
                    socket_connect_timeout=max(timeout, 0.05),
                    **extra,
                )
                self._redis = sync_strategies.MovingWindowRateLimiter(store)
            except Exception as exc:  # an URL form the limits library does not take
                self.degraded = type(exc).__name__
                logger.warning(
                    "order rate of {} counted in process memory: {}", name, self.degraded
                )
        self.refused = 0

    def _take(self, limiter: Any) -> RateLimitItem | None:
        """Take one slot of every item; the first full item, or ``None``."""
        if len(self.items) == 1:  # one round trip: a moving-window hit refuses when full
            return None if limiter.hit(self.items[0], self.key) else self.items[0]
        for item in self.items:
            if not limiter.test(item, self.key):
                return item
        for item in self.items:
            if not limiter.hit(item, self.key):
                return item
        return None

    def check(self) -> None:
        """Count one order.

        Raises:
            RiskLimitError: the rate is full (rule ``trading.max_order_rate``).
        """
        full: RateLimitItem | None
        if self._redis is not None:
            try:
                full = self._take(self._redis)
            except Exception as exc:
                logger.warning(
                    "order rate of {} counted in memory: Redis unreachable ({})",
                    self.name,
                    type(exc).__name__,
                )
                with self._lock:
                    full = self._take(self._memory)
        else:
            with self._lock:
                full = self._take(self._memory)
        if full is None:
            return
        self.refused += 1
        raise RiskLimitError(
            "trading.max_order_rate",
            None,
            None,
            f"order refused by trading.max_order_rate: {self.name!r} reached {full} orders; "
            "a strategy sending orders this fast is stopped here, not queued (raise "
            "trading.max_order_rate if the rate is intended)",
        )
