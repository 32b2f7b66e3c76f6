"""Fallbacks: a value, a function or the last good result instead of an error.

A risk-limit error is never replaced by a fallback (a refused order must stay refused); an
open circuit always is a reason to fall back. Serving a fallback marks the name degraded until
the next success: the first fallback of such an episode is logged, every one is counted and
reported to hooks, and :func:`fallback_status` shows it to health checks.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from resilient._core import clock as _clock
from resilient._core import events as _hooks
from resilient._core.deadline import seconds_of
from resilient._core.exceptions import CircuitOpenError, RiskLimitError
from resilient._core.wrapping import (
    UNSET,
    Layer,
    check_target,
    exception_matcher,
    is_async_callable,
    policy_name,
    wrap,
)
from resilient._policies import cache as _cache
from resilient.config import current_config, switches
from resilient.config._bounds import check_arguments

__all__ = ["FallbackStatus", "fallback", "fallback_status", "reset_fallback_status"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class FallbackStatus:
    """Whether a name is serving fallbacks.

    Attributes:
        degraded: the last call of ``name`` served a fallback.
        served: fallbacks served since the process started.
        episodes: degraded episodes since the process started.
        since: wall-clock time the current episode began (``None`` when not degraded).
        last_category: error category of the last failure that was replaced.
    """

    name: str
    degraded: bool
    served: int
    episodes: int
    since: float | None
    last_category: str | None


class _Episode:
    """Per-name fallback bookkeeping, shared by every function using the name."""

    __slots__ = ("degraded", "episodes", "last_category", "lock", "name", "served", "since")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Clear the counters and the degraded flag."""
        with self.lock:
            self.degraded = False
            self.served = 0
            self.episodes = 0
            self.since: float | None = None
            self.last_category: str | None = None

    def served_one(
        self, exc: BaseException, source: str, age: float | None, elapsed: float = 0.0
    ) -> None:
        with self.lock:
            first = not self.degraded
            if first:
                self.degraded = True
                self.episodes += 1
                self.since = _clock._current.time()
            self.served += 1
            self.last_category = _hooks.category_of(exc)
        _hooks.event(
            _hooks.EventKind.FALLBACK_SERVED,
            self.name,
            exc,
            source=source,
            cache_age=age,
            first_in_episode=first,
            elapsed=elapsed,
        )

    def recovered(self) -> None:
        with self.lock:
            if not self.degraded:
                return
            self.degraded = False
            self.since = None
        _hooks.event(_hooks.EventKind.FALLBACK_RECOVERED, self.name)

    def status(self) -> FallbackStatus:
        with self.lock:
            return FallbackStatus(
                self.name,
                self.degraded,
                self.served,
                self.episodes,
                self.since,
                self.last_category,
            )


_episodes: dict[str, _Episode] = {}
_episodes_lock = threading.Lock()


def _episode(name: str) -> _Episode:
    with _episodes_lock:
        found = _episodes.get(name)
        if found is None:
            found = _episodes[name] = _Episode(name)
        return found


def reset_fallback_status() -> None:
    """Clear every name's fallback counters and degraded flag (tests, operator reset)."""
    with _episodes_lock:
        episodes = list(_episodes.values())
    for ep in episodes:
        ep.reset()


def fallback_status() -> dict[str, FallbackStatus]:
    """Every name with a fallback, and whether it is degraded right now."""
    return {name: _episodes[name].status() for name in sorted(_episodes)}


def fallback(
    fn: Any = UNSET,
    /,
    *,
    value: Any = UNSET,
    func: Callable[..., Any] | None = None,
    cache: bool = False,
    on: Any = Exception,
    name: str | None = None,
    cache_ttl: float | timedelta | None = None,
    cache_key: str | None = None,
    cached_as: Callable[[Any, float, BaseException], Any] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Return a fallback instead of raising.

    Args:
        value: returned when the call fails.
        func: ``func(exc, *args, **kwargs)`` computes the fallback; it may be async when the
            decorated function is.
        cache: serve the last good result for the same arguments (younger than
            ``cache_ttl``, default ``resilience.fallback_cache_ttl``); with nothing cached,
            ``value``/``func`` is used when given, else the original error is re-raised.
        on: exception types, tuple or predicate that may be replaced (default every
            ``Exception``). An open circuit always may; a risk-limit error never is.
        name: the health/metrics name (default: the function's qualified name).
        cache_key: the prefix of the cache keys (default: ``name``), for functions that share
            a name but not their answers.
        cached_as: ``cached_as(value, age, exc)`` is what a cached value is served as (for
            example the value marked stale).

    An ``on`` predicate that raises is logged once and counts as no match (the error is
    raised as it is).

    Raises:
        ValueError / TypeError: at decoration, for a missing or contradictory choice
            (bare ``@fallback`` included: it cannot know what to serve).
    """
    if fn is not UNSET:
        raise TypeError(
            "fallback takes keyword arguments only: write @fallback(value=...), "
            "@fallback(func=handler) or @fallback(cache=True), not bare @fallback or "
            f"fallback({fn!r})"
        )
    if value is not UNSET and func is not None:
        raise ValueError("fallback takes value= or func=, not both")
    if value is UNSET and func is None and not cache:
        raise ValueError("fallback needs value=, func= or cache=True")
    if func is not None and not callable(func):
        raise TypeError(f"fallback func must be callable, got {func!r}")
    matcher = exception_matcher(_hooks.guard_spec(on, "fallback on="), "fallback on") or (
        lambda exc: False
    )
    ttl_explicit = seconds_of(cache_ttl, "cache_ttl") if cache_ttl is not None else None
    if ttl_explicit == 0:
        raise ValueError("cache_ttl must be > 0 seconds")
    check_arguments("fallback", {"cache_ttl": ttl_explicit}, "fallback")  # 30 days at most
    # A mutable built-in value is served as a fresh copy each time, so that a caller changing
    # what it got cannot change later fallbacks; other objects keep their identity (sentinels).
    value_snapshot: tuple[int, Any] | None = None
    if type(value) in (list, dict, set, bytearray):
        try:
            value_snapshot = _cache._snapshot(value)
        except Exception:  # neither picklable nor copyable: served as it is
            value_snapshot = None

    def fallback_value() -> Any:
        return value if value_snapshot is None else _cache._restore(*value_snapshot)

    func_is_async = func is not None and is_async_callable(func)

    def may_replace(exc: BaseException) -> bool:
        if isinstance(exc, RiskLimitError):
            return False
        return isinstance(exc, CircuitOpenError) or matcher(exc)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        check_target(fn, "@fallback(...)")
        pname = name or policy_name(fn)
        prefix = cache_key or pname
        layer = Layer("fallback", pname)
        episode = _episode(pname)
        ttl_state = [-1, 0.0]  # generation, ttl

        def ttl() -> float:
            if ttl_explicit is not None:
                return ttl_explicit
            if ttl_state[0] != switches.generation:
                ttl_state[1] = current_config().resilience.fallback_cache_ttl
                ttl_state[0] = switches.generation
            return ttl_state[1]

        def from_cache(exc: Exception, hit: _cache.CachedValue, started: float) -> Any:
            served = hit.value if cached_as is None else cached_as(hit.value, hit.age, exc)
            elapsed = _clock._current.monotonic() - started  # how long the caller waited
            episode.served_one(exc, "cache", hit.age, elapsed)
            return served

        def unreplaced(exc: Exception) -> None:
            if layer.outermost and not isinstance(exc, CircuitOpenError):
                _hooks.event(_hooks.EventKind.CALL_FAILED, pname, exc)

        def replaceable(exc: Exception) -> None:
            """Raise ``exc`` when no fallback may replace it."""
            if not may_replace(exc):
                unreplaced(exc)
                raise exc

        def fresh(hit: _cache.CachedValue | None) -> _cache.CachedValue | None:
            return hit if hit is not None and hit.age <= ttl() else None

        def choose(exc: Exception, args: Any, kwargs: Any, hit: Any) -> tuple[str, Any]:
            """The fallback for ``exc``: its source and value (the cache entry, or a func's
            result as returned, maybe awaitable); raises ``exc`` when there is none."""
            if hit is not None:
                return "cache", hit
            if func is not None:
                return "func", func(exc, *args, **kwargs)
            if value is not UNSET:
                return "value", fallback_value()
            unreplaced(exc)
            raise exc

        def served(exc: Exception, source: str, result: Any, started: float) -> Any:
            if source == "cache":
                return from_cache(exc, result, started)
            episode.served_one(exc, source, None)
            return result

        # The shells below only call and wait. A failure leaves the except block before the
        # fallback is chosen, so an error of the fallback never gets it as __context__.

        if is_async_callable(fn):
            afn = cast("Callable[..., Awaitable[Any]]", fn)

            async def serve_async(
                exc: Exception, args: Any, kwargs: Any, key: str | None, started: float
            ) -> Any:
                replaceable(exc)
                hit = fresh(None if key is None else await _cache._cache.get(key))
                source, result = choose(exc, args, kwargs, hit)
                if source == "func" and (func_is_async or inspect.isawaitable(result)):
                    result = await result
                return served(exc, source, result, started)

            async def acall(*args: Any, **kwargs: Any) -> Any:
                # the key of the arguments as passed (the function may mutate them)
                key = _cache.cache_key_or_none(prefix, args, kwargs) if cache else None
                started = _clock._current.monotonic() if key is not None else 0.0
                try:
                    result = await afn(*args, **kwargs)
                except Exception as exc:
                    err = exc
                else:
                    if key is not None:
                        await _cache._cache.set(key, result, ttl())
                    if episode.degraded:
                        episode.recovered()
                    return result
                return await serve_async(err, args, kwargs, key, started)

            return cast("Callable[P, R]", wrap(acall, fn, layer))

        if func_is_async:
            raise TypeError(
                f"{pname} is a plain function but its fallback func is async: give a plain "
                "function as fallback, or make the decorated function async"
            )

        def serve(exc: Exception, args: Any, kwargs: Any, key: str | None, started: float) -> Any:
            replaceable(exc)
            hit = fresh(None if key is None else _cache._cache.get_sync(key))
            return served(exc, *choose(exc, args, kwargs, hit), started)

        def call(*args: Any, **kwargs: Any) -> Any:
            key = _cache.cache_key_or_none(prefix, args, kwargs) if cache else None
            started = _clock._current.monotonic() if key is not None else 0.0
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                err = exc
            else:
                if key is not None:
                    _cache._cache.set_sync(key, result, ttl())
                if episode.degraded:
                    episode.recovered()
                return result
            return serve(err, args, kwargs, key, started)

        return cast("Callable[P, R]", wrap(call, fn, layer))

    return decorate
