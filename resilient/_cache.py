"""The fallback cache: the last good result per call, behind an async + sync interface.

``fallback(cache=True)`` stores every successful result under a key derived from the policy
name and the call's arguments, and serves it (with its age) when a later call fails. The
in-process :class:`MemoryCache` is the default; a shared store (Redis) plugs in with
:func:`set_fallback_cache` and must follow the :class:`FallbackCache` protocol: never raise
from ``set``/``set_sync`` (degrade instead) and return ``None`` from ``get`` when unsure.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from . import _clock

__all__ = [
    "CachedValue",
    "FallbackCache",
    "MemoryCache",
    "cache_key",
    "get_fallback_cache",
    "set_fallback_cache",
]


@dataclass(frozen=True, slots=True)
class CachedValue:
    """A cached result and its age in seconds."""

    value: Any
    age: float


@runtime_checkable
class FallbackCache(Protocol):
    """Where ``fallback(cache=True)`` keeps last good results."""

    async def get(self, key: str) -> CachedValue | None:
        """The unexpired value under ``key`` with its age, or ``None``."""

    async def set(self, key: str, value: Any, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds. Never raises."""

    def get_sync(self, key: str) -> CachedValue | None:
        """Blocking variant of :meth:`get` for sync functions."""

    def set_sync(self, key: str, value: Any, ttl: float) -> None:
        """Blocking variant of :meth:`set`; must not block long. Never raises."""


class MemoryCache:
    """A bounded, thread-safe, in-process LRU cache with per-entry TTL (the default)."""

    __slots__ = ("_data", "_lock", "max_entries")

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[Any, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get_sync(self, key: str) -> CachedValue | None:
        now = _clock._current.monotonic()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            value, stored, expires = entry
            if now >= expires:
                del self._data[key]
                return None
            self._data.move_to_end(key)
        return CachedValue(value, max(0.0, now - stored))

    def set_sync(self, key: str, value: Any, ttl: float) -> None:
        now = _clock._current.monotonic()
        with self._lock:
            self._data[key] = (value, now, now + ttl)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    async def get(self, key: str) -> CachedValue | None:
        return self.get_sync(key)

    async def set(self, key: str, value: Any, ttl: float) -> None:
        self.set_sync(key, value, ttl)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


_cache: FallbackCache = MemoryCache()


def get_fallback_cache() -> FallbackCache:
    """The cache in force."""
    return _cache


def set_fallback_cache(cache: FallbackCache | None) -> FallbackCache:
    """Install ``cache`` (``None``: a fresh in-process cache); returns the previous one."""
    global _cache
    if cache is not None and not isinstance(cache, FallbackCache):
        raise TypeError(
            f"{type(cache).__name__} is not a FallbackCache: it needs async get/set and "
            "get_sync/set_sync methods"
        )
    previous, _cache = _cache, cache if cache is not None else MemoryCache()
    return previous


def cache_key(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """``"<name>:<digest>"``: a stable digest of the arguments, never the arguments themselves
    (they may hold credentials or order payloads)."""
    text = repr(args) if not kwargs else repr((args, sorted(kwargs.items())))
    return f"{name}:{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}"
