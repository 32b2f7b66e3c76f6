"""Client-side rate limits per service, on the ``limits`` library.

The limit (``services.<name>.rate_limit``, e.g. ``"200/minute"``) is counted in process memory, or
in Redis when ``redis.url`` is set so that every process of the system shares one budget. A call
over the limit waits for a free slot up to ``rate_limit_max_wait`` seconds, then is refused with
:class:`RateLimitExceeded` without reaching the vendor. When Redis is unreachable the limiter
keeps counting in memory and reports itself degraded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

from limits import RateLimitItem, parse_many
from limits import storage as sync_storage
from limits import strategies as sync_strategies

from .._exceptions import ResilientError
from .._logging import logger
from .._redis_url import limits_storage
from .._sanitize import sanitize

__all__ = ["RateLimitExceeded", "ServiceRateLimiter"]

_REDIS_RETRY_SECONDS = 10.0


class RateLimitExceeded(ResilientError):
    """A call was refused by the client-side rate limit before it was sent.

    Attributes:
        name: the service.
        limit: the limit that was full (``"200 per 1 minute"``).
        retry_after: seconds until a slot frees.
        request_sent: always ``False`` (the vendor never saw the call).
    """

    request_sent = False

    def __init__(self, name: str, limit: str, retry_after: float) -> None:
        self.name = name
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(
            f"client-side rate limit of {name!r} is full ({limit}); next slot in "
            f"{retry_after:.2f}s — raise services.{name}.rate_limit or "
            f"services.{name}.rate_limit_max_wait if the vendor allows more"
        )


class ServiceRateLimiter:
    """The rate limit of one service (moving window).

    Args:
        name: the service name (part of the storage key).
        spec: ``limits`` notation, e.g. ``"200/minute"`` or ``"10/second; 200/minute"``.
        max_wait: longest wait for a free slot before refusing, in seconds.
        redis_url: share the counts through this Redis (``None``: in process).
        key_prefix: prefix of the Redis keys.
        timeout: socket timeout of the Redis client.
    """

    def __init__(
        self,
        name: str,
        spec: str,
        *,
        max_wait: float = 5.0,
        redis_url: str | None = None,
        key_prefix: str = "resilient",
        timeout: float = 0.1,
    ) -> None:
        self.name = name
        self.spec = spec
        self.items: list[RateLimitItem] = list(parse_many(spec))
        self.max_wait = max_wait
        self.key = f"service:{name}"
        self._redis_url = redis_url
        self._key_prefix = f"{key_prefix}:ratelimit"
        self._timeout = timeout
        self._memory = sync_strategies.MovingWindowRateLimiter(sync_storage.MemoryStorage())
        self._aio: Any = None  # limits.aio MovingWindowRateLimiter on Redis, built lazily
        self._aio_storage: Any = None
        self._sync: Any = None
        self._redis_failed_at: float | None = None
        self._redis_error = ""
        self._lock = threading.Lock()
        self.requests = 0
        self.throttled = 0
        self.refused = 0
        self.waited = 0.0

    @property
    def backend(self) -> str:
        """``"redis"`` or ``"memory"``."""
        return "redis" if self._redis_url else "memory"

    @property
    def degraded(self) -> bool:
        """True while a configured Redis is unreachable (counting in memory meanwhile)."""
        return self._redis_failed_at is not None

    def _use_redis(self) -> bool:
        if not self._redis_url:
            return False
        failed = self._redis_failed_at
        return failed is None or time.monotonic() - failed > _REDIS_RETRY_SECONDS

    def _redis_down(self, exc: BaseException) -> None:
        if self._redis_failed_at is None:
            logger.warning(
                "rate limit of {} counts in memory: Redis is unreachable ({})",
                self.name,
                type(exc).__name__,
            )
        self._redis_failed_at = time.monotonic()
        self._redis_error = sanitize(f"{type(exc).__name__}: {exc}")

    def _redis_up(self) -> None:
        if self._redis_failed_at is not None:
            logger.info("rate limit of {} counts in Redis again", self.name)
        self._redis_failed_at = None
        self._redis_error = ""

    def _aio_limiter(self) -> Any:
        if self._aio is None:
            from limits.aio import strategies as aio_strategies

            assert self._redis_url is not None
            uri, extra = limits_storage(self._redis_url)  # cluster / Sentinel forms too
            self._aio_storage = sync_storage.storage_from_string(
                "async+" + uri,
                implementation="redispy",
                key_prefix=self._key_prefix,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                **extra,
            )
            self._aio = aio_strategies.MovingWindowRateLimiter(self._aio_storage)
        return self._aio

    def _sync_limiter(self) -> Any:
        if self._sync is None:
            assert self._redis_url is not None
            uri, extra = limits_storage(self._redis_url)  # cluster / Sentinel forms too
            store = sync_storage.storage_from_string(
                uri,
                key_prefix=self._key_prefix,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                **extra,
            )
            self._sync = sync_strategies.MovingWindowRateLimiter(store)
        return self._sync

    def _wait_for(self, stats_reset: float) -> float:
        return max(0.0, stats_reset - time.time()) + 0.001

    def _memory_try(self) -> float:
        """Take a slot in memory; 0 when taken, else seconds until one frees."""
        with self._lock:
            for item in self.items:
                if not self._memory.test(item, self.key):
                    reset = self._memory.get_window_stats(item, self.key).reset_time
                    return self._wait_for(reset)
            for item in self.items:
                self._memory.hit(item, self.key)
        return 0.0

    async def _atry(self) -> float:
        if self._use_redis():
            try:
                limiter = self._aio_limiter()
                for item in self.items:
                    if not await limiter.test(item, self.key):
                        stats = await limiter.get_window_stats(item, self.key)
                        self._redis_up()
                        return self._wait_for(stats.reset_time)
                for item in self.items:
                    await limiter.hit(item, self.key)
                self._redis_up()
                return 0.0
            except Exception as exc:
                self._redis_down(exc)
        return self._memory_try()

    def _try_sync(self) -> float:
        if self._use_redis():
            try:
                limiter = self._sync_limiter()
                for item in self.items:
                    if not limiter.test(item, self.key):
                        self._redis_up()
                        return self._wait_for(limiter.get_window_stats(item, self.key).reset_time)
                for item in self.items:
                    limiter.hit(item, self.key)
                self._redis_up()
                return 0.0
            except Exception as exc:
                self._redis_down(exc)
        return self._memory_try()

    def _refuse(self, wait: float) -> RateLimitExceeded:
        self.refused += 1
        return RateLimitExceeded(self.name, self.spec, wait)

    async def acquire(self) -> None:
        """Take a slot, waiting up to ``max_wait`` seconds.

        Raises:
            RateLimitExceeded: no slot within ``max_wait``.
        """
        self.requests += 1
        waited = 0.0
        while True:
            wait = await self._atry()
            if wait == 0.0:
                return
            if waited == 0.0:
                self.throttled += 1
            if waited + wait > self.max_wait:
                raise self._refuse(wait)
            waited += wait
            self.waited += wait
            # real time: the window is counted on the wall clock by the limits library
            await asyncio.sleep(wait)

    def acquire_sync(self) -> None:
        """Take a slot from a synchronous call (blocking the calling thread while waiting)."""
        self.requests += 1
        waited = 0.0
        while True:
            wait = self._try_sync()
            if wait == 0.0:
                return
            if waited == 0.0:
                self.throttled += 1
            if waited + wait > self.max_wait:
                raise self._refuse(wait)
            waited += wait
            self.waited += wait
            time.sleep(wait)

    async def usage(self) -> dict[str, Any]:
        """API usage of the service: the limit, calls in the current window, totals."""
        item = self.items[0]
        used: float | None = None
        try:
            if self._use_redis():
                stats = await self._aio_limiter().get_window_stats(item, self.key)
                self._redis_up()
            else:
                stats = self._memory.get_window_stats(item, self.key)
            used = float(item.amount - stats.remaining)
        except Exception as exc:
            self._redis_down(exc)
            stats = self._memory.get_window_stats(item, self.key)
            used = float(item.amount - stats.remaining)
        data: dict[str, Any] = {
            "limit": self.spec,
            "window_limit": item.amount,
            "window_used": used,
            "usage_ratio": round(used / item.amount, 4) if item.amount else 0.0,
            "requests": self.requests,
            "throttled": self.throttled,
            "refused": self.refused,
            "waited_seconds": round(self.waited, 3),
            "backend": self.backend,
        }
        if self.degraded:
            data["backend_error"] = self._redis_error
        try:
            from .. import metrics

            metrics.set_rate_limit_usage(self.name, used=used, limit=float(item.amount))
        except Exception:
            pass
        return data

    async def aclose(self) -> None:
        """Close the Redis connections (if any were opened)."""
        storage, self._aio, self._aio_storage = self._aio_storage, None, None
        if storage is not None:
            for client in _clients(getattr(storage, "bridge", None), "storage_replica"):
                with contextlib.suppress(Exception):
                    await client.aclose()
        sync, self._sync = self._sync, None
        if sync is not None:
            for client in _clients(getattr(sync, "storage", None), "storage_slave"):
                close = getattr(client, "close", None)
                if callable(close):
                    with contextlib.suppress(Exception):
                        close()


def _clients(holder: Any, replica: str) -> list[Any]:
    """Every Redis client a ``limits`` storage opened: the data client, a Sentinel setup's
    replica client and its Sentinel connections."""
    if holder is None:
        return []
    found = [getattr(holder, "storage", None), getattr(holder, replica, None)]
    found += list(getattr(getattr(holder, "sentinel", None), "sentinels", []))
    return [c for c in found if c is not None]
