"""Redis access for the fallback cache and shared circuit state, bounded and guarded.

Every Redis command runs on one background event loop per URL (a daemon thread), so callers
on any thread or event loop share one connection pool, and the caller never waits longer than
``redis.timeout``:

- the client has explicit socket and connect timeouts and **no hidden retries**
  (``Retry(NoBackoff(), 0)``: redis-py's default retry stalls for seconds on a dead server);
- each command also runs under ``asyncio.timeout(redis.timeout)``;
- a small breaker around Redis (:class:`RedisGuard`) skips Redis entirely after consecutive
  failures and lets one probe through per ``probe_interval``, so a dead Redis costs nothing;
- no redis exception ever reaches the caller: cache reads return ``None`` and writes degrade to
  the in-process cache.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

from resilient._core import clock as _clock
from resilient._core.cache_codec import decode_entry, encode_entry
from resilient._core.extras import missing_extra, require
from resilient._core.inline import run_inline
from resilient._core.log import logger
from resilient._core.pybreaker_import import pybreaker
from resilient._core.redis_url import parse_redis_url
from resilient._core.sanitize import mask_url, sanitize
from resilient._policies.breaker import Breaker
from resilient._policies.cache import CachedValue, MemoryCache, set_fallback_cache
from resilient.config import current_config

if TYPE_CHECKING:  # redis-py is the `redis` extra: imported only when a URL is used
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

__all__ = [
    "CacheEntry",
    "RedisCache",
    "RedisClient",
    "RedisGuard",
    "RedisUnavailable",
    "RedisWorker",
    "describe_error",
    "enable_redis_cache",
    "get_redis_cache",
    "get_worker",
    "make_redis_client",
    "register_health_checks",
]

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis was skipped or failed; internal, never raised to users of the cache."""


# A client for any ``redis.url`` form: one server (also Sentinel's master) or a cluster.
if TYPE_CHECKING:
    RedisClient: TypeAlias = "aioredis.Redis | RedisCluster"
else:
    RedisClient = Any


def make_redis_client(url: str, *, timeout: float = 0.1, **kwargs: Any) -> RedisClient:
    """An asyncio Redis client for any ``redis.url`` form, every command bounded by ``timeout``.

    ``redis+cluster://`` gives a :class:`~redis.asyncio.cluster.RedisCluster` (slots followed
    on MOVED and after a node fails); ``redis+sentinel://`` gives the service's master as the
    Sentinels name it (a demoted master's connections are dropped and the new one looked up).
    No retries inside redis-py (its default hides seconds of retrying on a dead server and
    re-sends non-idempotent commands); resilience is the caller's decision.

    Raises:
        ModuleNotFoundError: redis-py is not installed (``pip install "resilient[redis]"``).
        ValueError: the URL is malformed (the message says how to write it).
    """
    try:
        import redis.asyncio as aioredis
        from redis.asyncio.cluster import RedisCluster
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "redis.url (the Redis cache, shared state and limits)") from None

    target = parse_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "max_connections": 64,
    }
    options.update(kwargs)
    if target.kind == "cluster":
        from redis.asyncio.cluster import ClusterNode

        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            username=target.username,
            password=target.password,
            ssl=target.tls,
            **options,
        )
    if target.kind == "sentinel":
        from redis.asyncio.sentinel import Sentinel

        probe = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        sentinel = Sentinel(list(target.hosts), sentinel_kwargs=probe, **probe)  # type: ignore[no-untyped-call]
        master: aioredis.Redis = sentinel.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
            retry_on_timeout=False,
            **options,
        )
        _sentinels[id(master)] = sentinel
        return master
    options["retry_on_timeout"] = False
    return aioredis.Redis.from_url(url, **options)


_sentinels: dict[int, Any] = {}  # Sentinel managers by client id, closed with their client


def make_sync_redis_client(url: str, *, timeout: float = 0.1) -> Any:
    """A blocking redis-py client for any ``redis.url`` form (see :func:`make_redis_client`).

    Raises:
        ModuleNotFoundError: redis-py is not installed (``pip install "resilient[redis]"``).
        ValueError: the URL is malformed.
    """
    try:
        import redis
        from redis.cluster import ClusterNode, RedisCluster
        from redis.sentinel import Sentinel
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, "redis.url (the Redis cache, shared state and limits)") from None

    target = parse_redis_url(url)
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],  # type: ignore[no-untyped-call]
            username=target.username,
            password=target.password,
            ssl=target.tls,
            **options,
        )
    if target.kind == "sentinel":
        sentinel = Sentinel(list(target.hosts), sentinel_kwargs=options, **options)  # type: ignore[no-untyped-call]
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            ssl=target.tls,
        )
    return redis.Redis.from_url(url, **options)


async def close_client(client: RedisClient) -> None:
    """Close ``client`` and, for a Sentinel master, the connections to the Sentinels."""
    sentinel = _sentinels.pop(id(client), None)
    with contextlib.suppress(Exception):
        await client.aclose()
    for node in getattr(sentinel, "sentinels", ()):
        with contextlib.suppress(Exception):
            await node.aclose()


def _is_read_only(exc: BaseException) -> bool:
    """A write refused by a read-only replica (redis-py's ``ReadOnlyError``)."""
    return type(exc).__name__ == "ReadOnlyError" and type(exc).__module__.startswith("redis")


def describe_error(exc: BaseException) -> str:
    """``Type: message`` with secrets masked; a read-only replica is named as such."""
    if _is_read_only(exc):
        return (
            "Redis answered as a read-only replica (writes refused): point redis.url at the "
            "master, or use redis+sentinel:// so failovers are followed"
        )
    if type(exc).__name__ in ("MovedError", "AskError", "ClusterCrossSlotError") or (
        "cluster support disabled" not in str(exc) and "MOVED" in str(exc)
    ):
        return (
            f"{type(exc).__name__}: Redis answered as one node of a Redis Cluster: write "
            "redis.url as redis+cluster://host:port[,host:port...]"
        )
    return f"{type(exc).__name__}: {sanitize(exc)}"[:300]


class RedisGuard(Breaker):
    """The circuit breaker around Redis itself (a :class:`Breaker` outside the registry):
    open after ``failure_threshold`` consecutive failures, then one probe per
    ``probe_interval`` seconds until a call succeeds."""

    def __init__(self, *, failure_threshold: int = 2, probe_interval: float = 1.0) -> None:
        super().__init__(
            "resilient.redis",
            {
                "failure_threshold": failure_threshold,
                "reset_timeout": probe_interval,
                "half_open_max_calls": 1,
                "success_threshold": 1,
                "shared": False,
            },
        )
        self.last_error = ""
        self.read_only = False
        self._probe = 0  # the trial permit of the probe in flight
        self.add_listener(_RedisStateLog())

    @property
    def failures(self) -> int:
        """Consecutive failures."""
        return self.fail_counter

    @property
    def is_open(self) -> bool:
        """Whether Redis is currently considered down."""
        return self.state != pybreaker.STATE_CLOSED

    def allow(self) -> bool:
        """Whether a call may go to Redis now (at most one probe while open)."""
        if self.state == pybreaker.STATE_CLOSED:
            return True
        token = self.try_acquire()
        if token is None:
            return False
        self._probe = token
        return True

    def allow_peek(self) -> bool:
        """Whether :meth:`allow` could let a probe through now (does not take it)."""
        return self.can_admit()

    def success(self) -> None:
        """Redis answered."""
        if self.state == pybreaker.STATE_CLOSED and not self.fail_counter:
            return
        probe, self._probe = self._probe, 0
        self.read_only = False
        if self.state == pybreaker.STATE_OPEN:  # a forced call answered: Redis is back
            self.close()
        else:
            self.record_success(probe)

    def failure(self, exc: BaseException) -> None:
        """A call to Redis failed or timed out."""
        self.last_error = describe_error(exc)
        self.read_only = _is_read_only(exc)
        probe, self._probe = self._probe, 0
        self.record_failure(exc, probe)


class _RedisStateLog(pybreaker.CircuitBreakerListener):
    """Says when the process leaves Redis for its in-process state, and when it comes back."""

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        old, new = getattr(old_state, "name", None), new_state.name
        if old == pybreaker.STATE_CLOSED and new == pybreaker.STATE_OPEN:
            logger.warning(
                "Redis {} ({}); using in-process state until it answers",
                "refuses writes" if cb.read_only else "unreachable",
                cb.last_error,
            )
        elif new == pybreaker.STATE_CLOSED and old != pybreaker.STATE_CLOSED:
            logger.info("Redis reachable again; leaving the in-process fallback")


class RedisWorker:
    """A daemon thread with its own event loop that owns the Redis client for one URL."""

    def __init__(self, url: str, *, timeout: float = 0.1, probe_interval: float = 1.0) -> None:
        self.url = url
        self.timeout = timeout
        self.guard = RedisGuard(probe_interval=probe_interval)
        self.round_trips = 0
        self._loop = asyncio.new_event_loop()
        self._client: RedisClient | None = None
        self._pending: dict[str, tuple[bytes, float]] = {}
        self._pending_lock = threading.Lock()
        self._flush_scheduled = False
        self._inflight = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="resilient-redis", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"RedisWorker({mask_url(self.url)!r}, timeout={self.timeout})"

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The worker's event loop (for components that run tasks on it)."""
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def client(self) -> RedisClient:
        """The client; only use it from coroutines running on :attr:`loop`."""
        if self._client is None:
            # each command is bounded by asyncio.timeout in _guarded (redis.timeout, or a
            # longer bound a caller asks for, such as a half-open permit's); the socket
            # timeout only catches what that would miss
            slack = max(self.timeout, 5.0)
            self._client = make_redis_client(
                self.url, timeout=self.timeout, socket_timeout=slack, socket_connect_timeout=slack
            )
        return self._client

    async def _guarded(self, fn: Callable[[RedisClient], Awaitable[T]], limit: float) -> T:
        self.round_trips += 1
        try:
            async with asyncio.timeout(limit):
                result = await fn(self.client)
        except (Exception, asyncio.CancelledError) as exc:  # cancelled: the caller timed out
            self.guard.failure(exc)
            raise
        self.guard.success()
        return result

    def submit(
        self,
        fn: Callable[[RedisClient], Awaitable[T]],
        timeout: float | None = None,
        *,
        force: bool = False,
    ) -> concurrent.futures.Future[T]:
        """Schedule ``fn(client)`` on the worker loop; raises RedisUnavailable when skipped
        (``force``: ask Redis even while the guard skips it, e.g. a half-open permit)."""
        if self._closed or not (force or self.guard.allow()):
            raise RedisUnavailable(self.guard.last_error or "Redis worker closed")
        limit = self.timeout if timeout is None else timeout
        return asyncio.run_coroutine_threadsafe(self._guarded(fn, limit), self._loop)

    async def call(
        self,
        fn: Callable[[RedisClient], Awaitable[T]],
        limit: float | None = None,
        *,
        force: bool = False,
    ) -> T:
        """Run ``fn(client)`` from any event loop, bounded by ``limit`` (default: timeout).

        Raises:
            RedisUnavailable: skipped (Redis is down), timed out or failed.
        """
        limit = self.timeout if limit is None else limit
        future = self.submit(fn, limit, force=force)
        try:
            async with asyncio.timeout(limit):
                return await asyncio.wrap_future(future)
        except RedisUnavailable:
            raise
        except Exception as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {sanitize(exc)}") from exc

    def call_sync(
        self,
        fn: Callable[[RedisClient], Awaitable[T]],
        timeout: float | None = None,
        *,
        force: bool = False,
    ) -> T:
        """Blocking variant of :meth:`call` (never from the worker thread itself)."""
        limit = self.timeout if timeout is None else timeout
        future = self.submit(fn, limit, force=force)
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise RedisUnavailable(f"timed out after {limit}s") from exc
        except Exception as exc:
            raise RedisUnavailable(f"{type(exc).__name__}: {sanitize(exc)}") from exc

    # -- write-behind -------------------------------------------------------------------

    def enqueue_set(self, key: str, payload: bytes, ttl: float) -> None:
        """Queue ``SET key payload PX ttl``; writes are coalesced per key and pipelined.
        Never blocks and never raises."""
        if self._closed or not self.guard.allow_peek():
            return
        with self._pending_lock:
            self._pending[key] = (payload, ttl)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            self._loop.call_soon_threadsafe(self._start_flush)

    def _start_flush(self) -> None:
        self._inflight += 1
        task = self._loop.create_task(self._flush())
        task.add_done_callback(_ignore_result)

    async def _flush(self) -> None:
        try:
            await self._flush_batch()
        finally:
            self._inflight -= 1

    async def _flush_batch(self) -> None:
        with self._pending_lock:
            batch, self._pending = self._pending, {}
            self._flush_scheduled = False
        if not batch or not self.guard.allow():
            return

        async def write(client: RedisClient) -> None:
            async with client.pipeline(transaction=False) as pipe:
                for key, (payload, ttl) in batch.items():
                    pipe.set(key, payload, px=max(1, int(ttl * 1000)))
                await pipe.execute()

        with contextlib.suppress(Exception):  # the in-process layer still has every value
            await self._guarded(write, self.timeout)

    async def drain(self) -> None:
        """Wait until queued writes were attempted (tests and shutdown)."""
        for _ in range(200):
            with self._pending_lock:
                idle = not self._pending and not self._flush_scheduled and not self._inflight
            if idle:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0)

    # -- lifecycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Close the client and stop the worker thread."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            if self._client is not None:
                await close_client(self._client)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(2.0)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(2.0)
        if not self._thread.is_alive():
            self._loop.close()


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


_workers: dict[tuple[str, float], RedisWorker] = {}
_workers_lock = threading.Lock()


def get_worker(url: str, timeout: float = 0.1) -> RedisWorker:
    """The process-wide worker for ``url`` (created on first use).

    Raises:
        ModuleNotFoundError: redis-py is not installed (``pip install "resilient[redis]"``).
    """
    require("redis.asyncio", "redis.url (the Redis cache, shared state and limits)")
    key = (url, timeout)
    with _workers_lock:
        worker = _workers.get(key)
        if worker is None or worker._closed:
            worker = _workers[key] = RedisWorker(url, timeout=timeout)
        return worker


def close_workers() -> None:
    """Stop every worker thread (at shutdown and between tests)."""
    with _workers_lock:
        workers = list(_workers.values())
        _workers.clear()
    for worker in workers:
        worker.close()


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached value with its metadata: wall-clock ``stored_at``, ``ttl`` and ``age`` in
    seconds, and where it came from (``"redis"`` or ``"memory"``)."""

    value: Any
    stored_at: float
    ttl: float
    age: float
    source: str


class RedisCache:
    """The fallback cache on Redis, with the in-process cache as first copy and stand-in.

    Follows :class:`resilient._policies.cache.FallbackCache`. Writes go to the in-process cache at
    once and to Redis in the background (coalesced, pipelined); reads ask Redis first (bounded
    by ``timeout``) so every process serves the freshest value, then the in-process copy.

    Values are stored as typed JSON (:mod:`resilient._core.cache_codec`) and come back equal and
    of the same type; a value it cannot represent stays in-process only. Nothing read from
    Redis is ever unpickled.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float | None = None,
        prefix: str | None = None,
        local: MemoryCache | None = None,
        serializer: str = "json",
        default_ttl: float | None = None,
    ) -> None:
        if serializer != "json":
            raise ValueError(
                f"serializer must be 'json', got {serializer!r}: values read from Redis are "
                "never unpickled; register dataclasses and enums with register_cache_type"
            )
        config = current_config()
        self.url = url if url is not None else config.redis.url
        self.timeout = timeout if timeout is not None else config.redis.timeout
        self.prefix = f"{prefix or config.redis.key_prefix}:cache:"
        self.default_ttl = default_ttl or config.resilience.fallback_cache_ttl
        self.local = local if local is not None else MemoryCache()
        self.serializer = serializer
        self.hits = {"redis": 0, "memory": 0}
        self.misses = 0
        self._worker = get_worker(self.url, self.timeout) if self.url else None

    def __repr__(self) -> str:
        url = mask_url(self.url) if self.url else None
        return f"RedisCache(url={url!r}, timeout={self.timeout})"

    @property
    def worker(self) -> RedisWorker | None:
        """The Redis worker (``None`` without a URL: in-process only)."""
        return self._worker

    # -- encoding -----------------------------------------------------------------------

    def _encode(self, value: Any, ttl: float, stored_at: float) -> bytes:
        return encode_entry(value, stored_at, ttl)

    def _decode(self, raw: bytes) -> tuple[Any, float, float] | None:
        return decode_entry(raw)

    # -- FallbackCache protocol ---------------------------------------------------------

    async def get(self, key: str) -> CachedValue | None:
        """The freshest unexpired value (Redis, then in-process), or ``None``. Never raises."""
        entry = await self.entry(key)
        return CachedValue(entry.value, entry.age) if entry is not None else None

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store in-process now and in Redis in the background. Never blocks, never raises."""
        self.set_sync(key, value, ttl)

    def get_sync(self, key: str) -> CachedValue | None:
        """Blocking :meth:`get` (at most ``timeout``) for sync functions."""
        entry = self.entry_sync(key)
        return CachedValue(entry.value, entry.age) if entry is not None else None

    def set_sync(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Same as :meth:`set`: non-blocking, never raises."""
        ttl = self.default_ttl if ttl is None else ttl
        try:
            self.local.set_sync(key, value, ttl)
            if self._worker is not None:
                payload = self._encode(value, ttl, _clock._current.time())
                self._worker.enqueue_set(self.prefix + key, payload, ttl)
        except Exception as exc:  # a cache must never break the call that feeds it
            logger.debug("cache write skipped: {}", type(exc).__name__)

    # -- entries with metadata ----------------------------------------------------------

    def _from_raw(self, raw: bytes | str | None) -> CacheEntry | None:
        if raw is None:
            return None
        if isinstance(raw, str):
            raw = raw.encode()
        decoded = self._decode(raw)
        if decoded is None:
            return None
        value, stored_at, ttl = decoded
        age = max(0.0, _clock._current.time() - stored_at)
        if age >= ttl:
            return None
        self.hits["redis"] += 1
        return CacheEntry(value, stored_at, ttl, age, "redis")

    def _from_local(self, key: str) -> CacheEntry | None:
        cached = self.local.get_sync(key)
        if cached is None:
            self.misses += 1
            return None
        self.hits["memory"] += 1
        now = _clock._current.time()
        return CacheEntry(cached.value, now - cached.age, self.default_ttl, cached.age, "memory")

    async def _entry(
        self, key: str, call: Callable[[Callable[[Any], Any]], Awaitable[Any]]
    ) -> CacheEntry | None:
        if self._worker is not None:
            try:
                found = self._from_raw(await call(lambda r: r.get(self.prefix + key)))
                if found is not None:
                    return found
            except RedisUnavailable:
                pass
        return self._from_local(key)

    async def entry(self, key: str) -> CacheEntry | None:
        """The value with ``stored_at``, ``ttl``, ``age`` and ``source``, or ``None``."""
        worker = self._worker

        async def call(fn: Callable[[Any], Any]) -> Any:
            return await worker.call(fn) if worker is not None else None

        return await self._entry(key, call)

    def entry_sync(self, key: str) -> CacheEntry | None:
        """Blocking :meth:`entry` (at most ``timeout``)."""
        worker = self._worker

        async def call(fn: Callable[[Any], Any]) -> Any:
            return worker.call_sync(fn) if worker is not None else None

        return run_inline(self._entry(key, call))

    async def delete(self, key: str) -> None:
        """Forget ``key`` everywhere (best effort)."""
        self.local.set_sync(key, None, 0.0)
        if self._worker is not None:
            with contextlib.suppress(RedisUnavailable):
                await self._worker.call(lambda r: r.delete(self.prefix + key))

    # -- health -------------------------------------------------------------------------

    async def health_check(self) -> dict[str, Any]:
        """The ``cache`` component: healthy with Redis answering (or no Redis configured),
        degraded while the in-process cache stands in. Never raises."""
        data: dict[str, Any] = {
            "backend": "redis" if self._worker else "memory",
            "entries_in_process": len(self.local),
            "hits": dict(self.hits),
            "misses": self.misses,
        }
        if self._worker is None:
            return {"status": "healthy", "detail": "in-process cache (redis.url unset)", **data}
        started = _clock._current.monotonic()
        probe = self.prefix + "__health__"
        try:
            # a write, so that a read-only replica is found out (a PING would answer)
            await self._worker.call(lambda r: r.set(probe, b"1", px=10_000))
        except RedisUnavailable:
            guard = self._worker.guard
            what = "Redis is a read-only replica" if guard.read_only else "Redis unreachable"
            return {
                "status": "degraded",
                "detail": f"{what}; serving the in-process cache ({guard.last_error})",
                **data,
            }
        latency = _clock._current.monotonic() - started
        return {"status": "healthy", "detail": "", "latency_ms": round(latency * 1000, 3), **data}

    async def close(self) -> None:
        """Release this cache (the shared worker stays for other users of the URL)."""
        if self._worker is not None:
            await self._worker.drain()


_default_cache: RedisCache | None = None


def get_redis_cache() -> RedisCache:
    """The process cache built from the configuration (in-process only without redis.url)."""
    global _default_cache
    if _default_cache is None:
        _default_cache = RedisCache()
    return _default_cache


def forget_default_cache(cache: RedisCache | None) -> None:
    """Stop handing out ``cache`` (it was closed; ``None``: whichever it is) from
    :func:`get_redis_cache`, which builds a new one from the configuration next time."""
    global _default_cache
    if cache is None or _default_cache is cache:
        _default_cache = None


def enable_redis_cache(url: str | None = None, *, timeout: float | None = None) -> RedisCache:
    """Install a :class:`RedisCache` as the fallback cache used by ``fallback(cache=True)``."""
    global _default_cache
    cache = RedisCache(url, timeout=timeout)
    _default_cache = cache
    set_fallback_cache(cache)
    return cache


def register_health_checks(registry: Any, cache: RedisCache | None = None) -> None:
    """Register the ``cache`` component (non-critical: the in-process cache stands in)."""
    target = cache or get_redis_cache()
    registry.register("cache", target.health_check, critical=False)
