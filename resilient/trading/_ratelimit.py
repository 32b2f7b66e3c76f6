"""Client-side rate limits per service, on the ``limits`` library.

The limit (``services.<name>.rate_limit``, e.g. ``"200/minute"``) is counted in process memory, or
in Redis when ``redis.url`` is set so that every process of the system shares one budget. A call
over the limit waits for a free slot up to ``rate_limit_max_wait`` seconds, then is refused with
:class:`RateLimitExceeded` without reaching the vendor. When Redis is unreachable the limiter
keeps counting in memory and reports itself degraded.

Weights and linked limits: a method costs ``services.<name>.methods.<m>.weight`` units of the
service's (account-wide) limit, as a venue's request weights, and may have a limit of its own
(``methods.<m>.rate_limit``, counted in calls) that is taken together with the service's: a call
goes out only when every linked limit has room (hummingbot's ``linked_limits``).

Feedback from the venue: a 429 or 418 answer blocks the service until its Retry-After (shared
through Redis), and the usage headers (``X-MBX-USED-WEIGHT-1M``, ``X-RateLimit-Remaining`` /
``-Reset``; names configurable) raise the local count to the server's when the server has counted
more (another process, another program on the same key).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

from limits import RateLimitItem, parse_many
from limits import storage as sync_storage
from limits import strategies as sync_strategies

from resilient._backends.redis import make_redis_client, make_sync_redis_client
from resilient._core import events as _hooks
from resilient._core.classify import _header, http_status, retry_after
from resilient._core.exceptions import ResilientError
from resilient._core.log import logger
from resilient._core.redis_url import limits_storage
from resilient._core.sanitize import sanitize
from resilient.trading._steps import Steps, arun, run

__all__ = ["RateLimitExceeded", "ServiceRateLimiter", "limiter_for"]

_REDIS_RETRY_SECONDS = 10.0
_BLOCK_POLL_SECONDS = 0.25  # how often a process looks for a block set by another one
_BLOCK_STATUSES = (418, 429)
_Plan = tuple[tuple[RateLimitItem, str, bool], ...]  # (item, key, counts the call's weight)


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
        if limit.startswith("blocked"):
            hint = "the venue asked to wait (429/418 with Retry-After)"
        else:
            hint = (
                f"raise services.{name}.rate_limit or services.{name}.rate_limit_max_wait if the "
                "vendor allows more"
            )
        super().__init__(
            f"client-side rate limit of {name!r} is full ({limit}); next slot in "
            f"{retry_after:.2f}s — {hint}"
        )


class ServiceRateLimiter:
    """The rate limits of one service (moving windows), weighted, linked and fed back.

    Args:
        name: the service name (part of the storage key).
        spec: ``limits`` notation, e.g. ``"200/minute"`` or ``"10/second; 200/minute"``: the
            account-wide limit, in weight units ("" for none).
        max_wait: longest wait for a free slot before refusing, in seconds.
        redis_url: share the counts through this Redis (``None``: in process).
        key_prefix: prefix of the Redis keys.
        timeout: socket timeout of the Redis client.
        endpoints: per-method limits (method → spec), counted in calls, linked to ``spec``.
        used_header / remaining_header / reset_header: the venue's usage headers ("" to
            ignore one); they describe the account-wide limit's longest window.
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
        endpoints: Mapping[str, str] | None = None,
        used_header: str = "X-MBX-USED-WEIGHT-1M",
        remaining_header: str = "X-RateLimit-Remaining",
        reset_header: str = "X-RateLimit-Reset",
    ) -> None:
        self.name = name
        self.spec = spec
        self.items: list[RateLimitItem] = list(parse_many(spec)) if spec else []
        self.max_wait = max_wait
        self.key = f"service:{name}"
        self._plans: dict[str | None, _Plan] = {
            None: tuple((item, self.key, True) for item in self.items)
        }
        for method, method_spec in (endpoints or {}).items():
            own = tuple((item, f"{self.key}:{method}", False) for item in parse_many(method_spec))
            self._plans[method] = self._plans[None] + own
        # the usage headers describe the longest window of the account-wide limit
        self._synced: RateLimitItem | None = max(
            self.items, key=lambda i: i.get_expiry(), default=None
        )
        self._headers = (used_header, remaining_header, reset_header)
        self._redis_url = redis_url
        self._key_prefix = f"{key_prefix}:ratelimit"
        self._block_key = f"{self._key_prefix}:blocked:{self.key}"
        self._timeout = timeout
        self._memory = sync_strategies.MovingWindowRateLimiter(sync_storage.MemoryStorage())
        self._aio: Any = None  # limits.aio MovingWindowRateLimiter on Redis, built lazily
        self._aio_storage: Any = None
        self._sync: Any = None
        self._aio_client: Any = None  # redis clients for the shared block
        self._sync_client: Any = None
        self._redis_failed_at: float | None = None
        self._redis_error = ""
        self._lock = threading.Lock()
        self._blocked_until = 0.0  # wall clock: the venue asked for no call before this
        self._block_polled = 0.0
        self.requests = 0
        self.throttled = 0
        self.refused = 0
        self.waited = 0.0
        self.blocks = 0
        self.resyncs = 0

    @property
    def backend(self) -> str:
        """``"redis"`` or ``"memory"``."""
        return "redis" if self._redis_url else "memory"

    @property
    def degraded(self) -> bool:
        """True while a configured Redis is unreachable (counting in memory meanwhile)."""
        return self._redis_failed_at is not None

    @property
    def blocked_for(self) -> float:
        """Seconds left of a block the venue asked for (0 when none)."""
        return max(0.0, self._blocked_until - time.time())

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

    def _aio_redis(self) -> Any:
        if self._aio_client is None:  # every redis.url form
            self._aio_client = make_redis_client(self._redis_url or "", timeout=self._timeout)
        return self._aio_client

    def _sync_redis(self) -> Any:
        if self._sync_client is None:  # every redis.url form
            self._sync_client = make_sync_redis_client(self._redis_url or "", timeout=self._timeout)
        return self._sync_client

    def _wait_for(self, stats_reset: float) -> float:
        return max(0.0, stats_reset - time.time()) + 0.001

    def _plan(self, method: str | None) -> _Plan:
        plan = self._plans.get(method)
        return self._plans[None] if plan is None else plan

    def _blocked_wait(self) -> float:
        wait = self._blocked_until - time.time()
        return wait if wait > 0 else 0.0

    def _memory_try(self, plan: _Plan, cost: int) -> float:
        """Take a slot in memory; 0 when taken, else seconds until one frees."""
        with self._lock:
            for item, key, weighted in plan:
                amount = cost if weighted else 1
                if amount and not self._memory.test(item, key, cost=amount):
                    reset = self._memory.get_window_stats(item, key).reset_time
                    return self._wait_for(reset)
            for item, key, weighted in plan:
                amount = cost if weighted else 1
                if amount:
                    self._memory.hit(item, key, cost=amount)
        return 0.0

    def _client(self, asynchronous: bool) -> Any:
        """The Redis client for a sync or an async caller."""
        return self._aio_redis() if asynchronous else self._sync_redis()

    def _limiter(self, asynchronous: bool) -> Any:
        """The ``limits`` limiter on Redis for a sync or an async caller."""
        return self._aio_limiter() if asynchronous else self._sync_limiter()

    def _try_steps(self, asynchronous: bool, plan: _Plan, cost: int) -> Steps[float]:
        """Take a slot (0) or tell how long until one frees: in Redis while it answers (the
        venue's block polled from it), else in memory."""
        if self._use_redis():
            try:
                now = time.monotonic()
                if now - self._block_polled >= _BLOCK_POLL_SECONDS:
                    self._block_polled = now
                    raw = yield functools.partial(self._client(asynchronous).get, self._block_key)
                    if raw is not None:
                        self._blocked_until = max(self._blocked_until, float(raw))
                blocked = self._blocked_wait()
                if blocked:
                    self._redis_up()
                    return blocked
                limiter = self._limiter(asynchronous)
                for item, key, weighted in plan:
                    amount = cost if weighted else 1
                    if amount and not (
                        yield functools.partial(limiter.test, item, key, cost=amount)
                    ):
                        stats = yield functools.partial(limiter.get_window_stats, item, key)
                        self._redis_up()
                        return self._wait_for(stats.reset_time)
                for item, key, weighted in plan:
                    amount = cost if weighted else 1
                    if amount:
                        yield functools.partial(limiter.hit, item, key, cost=amount)
                self._redis_up()
                return 0.0
            except Exception as exc:
                self._redis_down(exc)
        return self._blocked_wait() or self._memory_try(plan, cost)

    def _refuse(self, wait: float) -> RateLimitExceeded:
        self.refused += 1
        blocked = self._blocked_wait()
        limit = f"blocked by the venue for {blocked:.1f}s" if blocked else self.spec
        exc = RateLimitExceeded(self.name, limit, wait)
        if _hooks.hooks:
            _hooks.event(_hooks.EventKind.RATE_LIMITED, self.name, exc, wait=wait)
        return exc

    def _throttled(self, wait: float) -> None:
        self.waited += wait
        if _hooks.hooks:
            _hooks.event(_hooks.EventKind.RATE_LIMITED, self.name, wait=wait)

    def _check_cost(self, cost: int) -> None:
        for item in self.items:
            if cost > item.amount:
                raise ValueError(
                    f"a call of weight {cost} can never fit the rate limit of {self.name!r} "
                    f"({item}); lower the method's weight or raise services.{self.name}.rate_limit"
                )

    def _acquire_steps(self, asynchronous: bool, cost: int, method: str | None) -> Steps[None]:
        self.requests += 1
        plan = self._plan(method)
        waited = 0.0
        while True:
            wait = yield from self._try_steps(asynchronous, plan, cost)
            if wait == 0.0:
                return
            if waited == 0.0:
                self._check_cost(cost)
                self.throttled += 1
            if waited + wait > self.max_wait:
                raise self._refuse(wait)
            waited += wait
            self._throttled(wait)
            # real time: the window is counted on the wall clock by the limits library
            yield functools.partial(asyncio.sleep if asynchronous else time.sleep, wait)

    async def acquire(self, cost: int = 1, method: str | None = None) -> None:
        """Take ``cost`` units of the service's limit (and one call of ``method``'s own
        limit), waiting up to ``max_wait`` seconds.

        Raises:
            RateLimitExceeded: no room within ``max_wait``.
            ValueError: ``cost`` is larger than a whole window.
        """
        await arun(self._acquire_steps(True, cost, method))

    def acquire_sync(self, cost: int = 1, method: str | None = None) -> None:
        """Take a slot from a synchronous call (blocking the calling thread while waiting)."""
        run(self._acquire_steps(False, cost, method))

    # --- feedback from the venue ------------------------------------------------------------

    def _read_headers(
        self, headers: object, status: int | None, server_wait: float | None
    ) -> tuple[float | None, float | None]:
        """``(block seconds, server's used count)`` from an answer's status and headers."""
        used_name, remaining_name, reset_name = self._headers
        block: float | None = None
        if status in _BLOCK_STATUSES:
            block = server_wait if server_wait is not None else _seconds(headers, "Retry-After")
            if block is None:
                block = _seconds(headers, reset_name) if reset_name else None
            if block is None:  # no hint: one window of the synced limit
                block = float(self._synced.get_expiry()) if self._synced else 1.0
        used: float | None = None
        if used_name:
            used = _number(_header(headers, used_name))
        if used is None and remaining_name and self._synced is not None:
            remaining = _number(_header(headers, remaining_name))
            if remaining is not None:
                used = self._synced.amount - remaining
                if remaining <= 0 and reset_name and block is None:
                    block = _seconds(headers, reset_name)
        return block, used

    def _local_block(self, seconds: float) -> float:
        until = time.time() + seconds
        if until > self._blocked_until:
            self._blocked_until = until
            self.blocks += 1
            logger.warning(
                "rate limit of {}: the venue asked to wait {:.1f}s; no call before then",
                self.name,
                seconds,
            )
        return until

    def _resync_memory(self, used: float) -> None:
        item = self._synced
        if item is None:
            return
        with self._lock:
            stats = self._memory.get_window_stats(item, self.key)
            missing = min(int(used) - (item.amount - stats.remaining), stats.remaining)
            if missing > 0:
                self._memory.hit(item, self.key, cost=missing)
                self.resyncs += 1

    def _feedback_steps(
        self,
        asynchronous: bool,
        headers: object = None,
        status: int | None = None,
        server_wait: float | None = None,
    ) -> Steps[None]:
        """Learn from one answer of the venue: block on 429/418, re-sync from usage headers."""
        block, used = self._read_headers(headers, status, server_wait)
        if block is None and used is None:
            return
        if block is not None:
            until = self._local_block(block)
        if self._use_redis():
            try:
                if block is not None:
                    client, px = self._client(asynchronous), max(1, int(block * 1000))
                    yield functools.partial(client.set, self._block_key, repr(until), px=px)
                if used is not None and self._synced is not None:
                    item, limiter = self._synced, self._limiter(asynchronous)
                    stats = yield functools.partial(limiter.get_window_stats, item, self.key)
                    missing = min(int(used) - (item.amount - stats.remaining), stats.remaining)
                    if missing > 0:
                        yield functools.partial(limiter.hit, item, self.key, cost=missing)
                        self.resyncs += 1
                self._redis_up()
                return
            except Exception as exc:
                self._redis_down(exc)
        if used is not None:
            self._resync_memory(used)

    async def afeedback(
        self, headers: object = None, status: int | None = None, server_wait: float | None = None
    ) -> None:
        """Learn from one answer of the venue: block on 429/418, re-sync from usage headers."""
        await arun(self._feedback_steps(True, headers, status, server_wait))

    def feedback(
        self, headers: object = None, status: int | None = None, server_wait: float | None = None
    ) -> None:
        """:meth:`afeedback` for synchronous clients."""
        run(self._feedback_steps(False, headers, status, server_wait))

    def watch(
        self, call: Callable[..., Any], asynchronous: bool, source: object = None
    ) -> Callable[..., Any]:
        """Wrap ``call`` so that the venue's answers feed the limiter: a failure's status and
        headers (429/418 → block), and an answer's usage headers, read from ``source``'s
        ``last_response_headers`` (ccxt keeps them there) or from the result itself when it is
        an HTTP response (has ``headers`` and ``status``/``status_code``)."""
        keeps_headers = source is not None and hasattr(source, "last_response_headers")

        def of_error(exc: BaseException) -> tuple[object, int | None, float | None]:
            response = getattr(exc, "response", None)
            headers = getattr(response, "headers", None) or getattr(exc, "headers", None)
            status = http_status(exc)
            return headers, status, retry_after(exc) if status in _BLOCK_STATUSES else None

        def of_answer(result: Any) -> object:
            if keeps_headers:
                return getattr(source, "last_response_headers", None)
            if hasattr(result, "status_code") or hasattr(result, "status"):
                return getattr(result, "headers", None)
            return None

        def learned(exc: BaseException | None, result: Any = None) -> Steps[None] | None:
            """What to learn from a failure or an answer (``None``: nothing)."""
            if exc is not None:
                try:
                    return self._quiet_feedback(asynchronous, *of_error(exc))
                except Exception:
                    return None
            headers = of_answer(result)
            return None if headers is None else self._quiet_feedback(asynchronous, headers)

        if asynchronous:

            async def awatched(*args: Any, **kwargs: Any) -> Any:
                try:
                    result = await call(*args, **kwargs)
                except Exception as exc:
                    if (steps := learned(exc)) is not None:
                        await arun(steps)
                    raise
                if (steps := learned(None, result)) is not None:
                    await arun(steps)
                return result

            return awatched

        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                if (steps := learned(exc)) is not None:
                    run(steps)
                raise
            if (steps := learned(None, result)) is not None:
                run(steps)
            return result

        return watched

    def _quiet_feedback(self, asynchronous: bool, *answer: Any) -> Steps[None]:
        """:meth:`_feedback_steps` that never raises: learning must not fail the call."""
        with contextlib.suppress(Exception):
            yield from self._feedback_steps(asynchronous, *answer)

    async def usage(self) -> dict[str, Any]:
        """API usage of the service: the limit, calls in the current window, totals."""
        data: dict[str, Any] = {
            "limit": self.spec,
            "requests": self.requests,
            "throttled": self.throttled,
            "refused": self.refused,
            "waited_seconds": round(self.waited, 3),
            "backend": self.backend,
            "venue_blocks": self.blocks,
            "blocked_seconds": round(self.blocked_for, 3),
            "resyncs": self.resyncs,
        }
        if self.items:
            item = self._synced or self.items[0]
            try:
                if self._use_redis():
                    stats = await self._aio_limiter().get_window_stats(item, self.key)
                    self._redis_up()
                else:
                    stats = self._memory.get_window_stats(item, self.key)
            except Exception as exc:
                self._redis_down(exc)
                stats = self._memory.get_window_stats(item, self.key)
            used = float(item.amount - stats.remaining)
            data.update(
                window_limit=item.amount,
                window_used=used,
                usage_ratio=round(used / item.amount, 4) if item.amount else 0.0,
            )
        if self.degraded:
            data["backend_error"] = self._redis_error
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

        aio_client, self._aio_client = self._aio_client, None
        if aio_client is not None:
            with contextlib.suppress(Exception):
                await aio_client.aclose()
        sync_client, self._sync_client = self._sync_client, None
        if sync_client is not None:
            with contextlib.suppress(Exception):
                sync_client.close()


def _number(value: object) -> float | None:
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _seconds(headers: object, name: str) -> float | None:
    """A header holding seconds, an epoch timestamp or an HTTP date, as seconds from now."""
    raw = _header(headers, name)
    number = _number(raw)
    if number is not None:
        if number > 1e12:  # epoch milliseconds
            number = number / 1000.0 - time.time()
        elif number > 1e9:  # epoch seconds
            number -= time.time()
        return max(0.0, number)
    if isinstance(raw, str):
        try:
            return max(0.0, parsedate_to_datetime(raw).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
    return None


def limiter_for(name: str, settings: Any, redis: Any) -> ServiceRateLimiter | None:
    """The limiter of a service from its ``services`` settings (``None``: no limit at all)."""
    endpoints = {m: p.rate_limit for m, p in settings.methods.items() if p.rate_limit}
    if not (settings.rate_limit or endpoints) or not settings.resilience_enabled:
        return None
    return ServiceRateLimiter(
        name,
        settings.rate_limit,
        max_wait=settings.rate_limit_max_wait,
        redis_url=redis.url,
        key_prefix=redis.key_prefix,
        timeout=max(redis.timeout, 0.05),
        endpoints=endpoints,
        used_header=settings.rate_limit_used_header,
        remaining_header=settings.rate_limit_remaining_header,
        reset_header=settings.rate_limit_reset_header,
    )


def _clients(holder: Any, replica: str) -> list[Any]:
    """Every Redis client a ``limits`` storage opened: the data client, a Sentinel setup's
    replica client and its Sentinel connections."""
    if holder is None:
        return []
    found = [getattr(holder, "storage", None), getattr(holder, replica, None)]
    found += list(getattr(getattr(holder, "sentinel", None), "sentinels", []))
    return [c for c in found if c is not None]
