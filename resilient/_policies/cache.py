"""The fallback cache: the last good result per call, behind an async + sync interface.

``fallback(cache=True)`` stores every successful result under a key derived from the policy
name and the call's arguments, and serves it (with its age) when a later call fails. The
in-process :class:`MemoryCache` is the default; a shared store (Redis) plugs in with
:func:`set_fallback_cache` and must follow the :class:`FallbackCache` protocol: never raise
from ``set``/``set_sync`` (degrade instead) and return ``None`` from ``get`` when unsure.

Keys are typed: :func:`cache_key` digests a canonical, self-delimiting encoding of the
arguments' types and values, never their ``repr`` (two arguments that print alike, or ``1``
and ``1.0``, never share a slot). An object compared by identity is keyed by identity; an
argument that cannot be encoded makes the call run uncached (:func:`cache_key_or_none`).

Values are isolated: :class:`MemoryCache` keeps a snapshot of what it stores (immutable values
as they are, others pickled in-process or deep-copied) and hands out a fresh copy on every read,
so neither the function nor a caller mutating its result can change the last good value.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import fractions
import hashlib
import itertools
import pickle
import sys
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from resilient._core import clock as _clock
from resilient._core.log import logger

__all__ = [
    "CachedValue",
    "FallbackCache",
    "MemoryCache",
    "UnkeyableError",
    "cache_key",
    "cache_key_or_none",
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


# -- value snapshots ------------------------------------------------------------------------

_IMMUTABLE_TYPES = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        complex,
        decimal.Decimal,
        fractions.Fraction,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        uuid.UUID,
        range,
    }
)
_SHARED, _PICKLED, _COPIED = 0, 1, 2
_MAX_DEPTH = 32


def _is_immutable(value: Any, depth: int = 0) -> bool:
    kind = type(value)
    if kind in _IMMUTABLE_TYPES or isinstance(value, enum.Enum):
        return True
    if (kind is tuple or kind is frozenset) and depth < _MAX_DEPTH:
        return all(_is_immutable(item, depth + 1) for item in value)
    return False


def _snapshot(value: Any) -> tuple[int, Any]:
    """What the cache keeps of ``value``: itself when immutable, else a private copy.

    Pickling in-process is about three times cheaper than ``copy.deepcopy`` on the typical
    dict-of-lists result (the bytes never leave the process); deepcopy is the fallback for
    values pickle cannot handle (local classes, lambdas inside).

    Raises:
        Exception: the value can be neither pickled nor deep-copied.
    """
    if _is_immutable(value):
        return _SHARED, value
    try:
        return _PICKLED, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return _COPIED, copy.deepcopy(value)


def _restore(kind: int, data: Any) -> Any:
    if kind == _SHARED:
        return data
    if kind == _PICKLED:
        return pickle.loads(data)
    return copy.deepcopy(data)


_logged: set[str] = set()
_logged_lock = threading.Lock()


def _log_once(what: str, message: str, *args: Any) -> None:
    with _logged_lock:
        if what in _logged:
            return
        _logged.add(what)
    logger.warning(message, *args)


class MemoryCache:
    """A bounded, thread-safe, in-process LRU cache with per-entry TTL (the default).

    Values are isolated from callers: a snapshot is stored and every read returns a fresh
    copy (immutable values are shared, there is nothing to protect). A value that can be
    neither pickled nor deep-copied is not cached (logged once per type).
    """

    __slots__ = ("_data", "_lock", "max_entries")

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be ≥ 1, got {max_entries}")
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[int, Any, float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get_sync(self, key: str) -> CachedValue | None:
        now = _clock._current.monotonic()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            kind, data, stored, expires = entry
            if now >= expires:
                del self._data[key]
                return None
            self._data.move_to_end(key)
        try:
            value = _restore(kind, data)
        except Exception as exc:  # a value whose own unpickling fails: a miss, not an error
            _log_once(
                f"restore:{type(exc).__name__}",
                "a cached fallback value could not be restored ({}); treated as a miss",
                type(exc).__name__,
            )
            return None
        return CachedValue(value, max(0.0, now - stored))

    def set_sync(self, key: str, value: Any, ttl: float) -> None:
        try:
            kind, data = _snapshot(value)
        except Exception as exc:
            name = type(value).__qualname__
            _log_once(
                f"copy:{name}",
                "a result of type {} cannot be copied ({}); results of this type are not cached",
                name,
                type(exc).__name__,
            )
            with self._lock:
                self._data.pop(key, None)  # never serve an older value for these arguments
            return
        now = _clock._current.monotonic()
        with self._lock:
            self._data[key] = (kind, data, now, now + ttl)
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


# -- typed keys -----------------------------------------------------------------------------


class UnkeyableError(TypeError):
    """An argument has no stable, collision-free key (internal: the call then runs uncached).

    Attributes:
        type_name: the qualified name of the argument's type.
        reason: why (an exception class name or a short phrase; never the value).
    """

    def __init__(self, type_name: str, reason: str) -> None:
        super().__init__(f"an argument of type {type_name} cannot be keyed ({reason})")
        self.type_name = type_name
        self.reason = reason


# Identity keys: an object compared by identity is keyed by a serial number that is never
# reused in this process (an ``id()`` is, once the object is gone), prefixed with a per-process
# nonce so that two processes sharing a Redis cache never meet in the same slot.
_NONCE = uuid.uuid4().hex[:16]
_serials = itertools.count(1)
_identities: dict[int, tuple[weakref.ref[Any], int]] = {}
_identities_lock = threading.Lock()


def _forget_identity(key: int, ref: weakref.ref[Any]) -> None:
    with _identities_lock:
        entry = _identities.get(key)
        if entry is not None and entry[0] is ref:
            del _identities[key]


def _identity(obj: Any) -> int:
    key = id(obj)
    entry = _identities.get(key)
    if entry is not None and entry[0]() is obj:
        return entry[1]
    try:
        ref = weakref.ref(obj, lambda r: _forget_identity(key, r))
    except TypeError:
        raise UnkeyableError(
            type(obj).__qualname__, "compared by identity and not weakly referenceable"
        ) from None
    with _identities_lock:
        entry = _identities.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        serial = next(_serials)
        _identities[key] = (ref, serial)
        return serial


_OBJECT_EQ: Any = object.__eq__


def _qualified(obj: Any) -> str | None:
    """``module.qualname`` when it names ``obj`` itself (so it is the same in every
    process), else ``None``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return f"{module}.{qualname}" if found is obj else None


def _type_tag(kind: type) -> str:
    name = _qualified(kind)
    if name is None:  # a local or shadowed class: its name is not unique
        name = f"{kind.__module__}.{kind.__qualname__}@{_NONCE}:{_identity(kind)}"
    return f"{len(name)}:{name}"


def _encode(value: Any, out: list[str], depth: int) -> None:
    """Append a self-delimiting, typed encoding of ``value`` to ``out``.

    Equal encodings imply values of the same types with the same contents; the converse
    (equal values, equal encodings) holds for the usual argument types and otherwise only
    costs a cache miss.
    """
    kind = type(value)
    if kind is str:
        out.append(f"s{len(value)}:")
        out.append(value)
    elif kind is int:
        out.append(f"i{value:x};")  # hex: no limit on the number of digits
    elif kind is float:
        out.append(f"f{value.hex()};")
    elif kind is bool:
        out.append("T" if value else "F")
    elif value is None:
        out.append("N")
    elif depth >= _MAX_DEPTH:
        raise UnkeyableError(kind.__qualname__, f"nested deeper than {_MAX_DEPTH} levels")
    elif kind is tuple or kind is list:
        out.append(f"{'(' if kind is tuple else '['}{len(value)}:")
        for item in value:
            _encode(item, out, depth + 1)
        out.append(")")
    elif kind is bytes:
        out.append(f"y{len(value)}:")
        out.append(value.decode("latin-1"))
    elif kind is dict:
        _encode_unordered("{", value.items(), len(value), out, depth, pairs=True)
    elif kind is set or kind is frozenset:
        _encode_unordered("<" if kind is set else ">", value, len(value), out, depth)
    else:
        try:
            _encode_object(value, kind, out, depth)
        except UnkeyableError:
            raise
        except Exception as exc:  # a hostile __getattr__, __eq__ or __reduce_ex__
            raise UnkeyableError(kind.__qualname__, type(exc).__name__) from None


def _encode_unordered(
    tag: str, items: Any, count: int, out: list[str], depth: int, *, pairs: bool = False
) -> None:
    parts: list[str] = []
    for item in items:
        piece: list[str] = []
        if pairs:
            _encode(item[0], piece, depth + 1)
            _encode(item[1], piece, depth + 1)
        else:
            _encode(item, piece, depth + 1)
        parts.append("".join(piece))
    parts.sort()  # self-delimiting pieces: sorting keeps the encoding unambiguous
    out.append(f"{tag}{count}:")
    out.extend(parts)
    out.append(")")


def _encode_object(value: Any, kind: type, out: list[str], depth: int) -> None:
    if isinstance(value, enum.Enum):
        out.append("E" + _type_tag(kind))
        _encode(value.name, out, depth + 1)
        return
    if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
        name = _qualified(value)
        if name is not None:  # a class or function reachable by name: the same everywhere
            out.append(f"G{len(name)}:{name}")
            return
    if dataclasses.is_dataclass(kind) and kind.__dataclass_params__.eq:  # type: ignore[attr-defined]
        out.append("D" + _type_tag(kind))
        fields = dataclasses.fields(value)
        out.append(f"{len(fields)}:")
        for field in fields:
            _encode(field.name, out, depth + 1)
            _encode(getattr(value, field.name), out, depth + 1)
        return
    if getattr(kind, "__eq__", None) is _OBJECT_EQ:  # compared by identity: keyed by identity
        out.append(f"@{_NONCE}:{_identity(value)};")
        return
    # Compared by value: key it by what reconstructs it (the pickle protocol's own
    # description, never pickled), e.g. Decimal, datetime, UUID, attrs and pydantic models.
    try:
        reduced = value.__reduce_ex__(4)
    except Exception as exc:
        raise UnkeyableError(kind.__qualname__, type(exc).__name__) from None
    out.append("R" + _type_tag(kind))
    if isinstance(reduced, str):
        _encode(reduced, out, depth + 1)
        return
    if not isinstance(reduced, tuple):
        raise UnkeyableError(kind.__qualname__, "__reduce_ex__ returned no tuple")
    parts = list(reduced)
    if len(parts) > 3 and parts[3] is not None:
        parts[3] = list(parts[3])
    if len(parts) > 4 and parts[4] is not None:
        parts[4] = list(parts[4])
    _encode(tuple(parts), out, depth + 1)


def cache_key(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """``"<name>:<digest>"``: a digest of the arguments' typed encoding, never the arguments
    themselves (they may hold credentials or order payloads).

    Raises:
        UnkeyableError: an argument cannot be keyed (see :func:`cache_key_or_none`).
    """
    if not kwargs and len(args) == 1 and type(args[0]) is str:  # a symbol: the common case
        text = f"(1:s{len(args[0])}:{args[0]})".encode("utf-8", "surrogatepass")
        return f"{name}:{hashlib.blake2b(text, digest_size=16).hexdigest()}"
    out: list[str] = []
    try:
        _encode(args, out, 0)
        if kwargs:
            _encode_unordered("K", kwargs.items(), len(kwargs), out, 0, pairs=True)
    except UnkeyableError:
        raise
    except Exception as exc:  # e.g. a dict whose items() raises while being read
        raise UnkeyableError("argument", type(exc).__name__) from None
    text = "".join(out).encode("utf-8", "surrogatepass")
    return f"{name}:{hashlib.blake2b(text, digest_size=16).hexdigest()}"


def cache_key_or_none(name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    """:func:`cache_key`, or ``None`` when an argument cannot be keyed: the call then runs
    uncached, which is logged once per ``name`` (the type, never the value)."""
    try:
        return cache_key(name, args, kwargs)
    except UnkeyableError as exc:
        _log_once(
            f"key:{name}",
            "fallback cache of {} skipped for a call: an argument of type {} cannot be keyed "
            "({}); such calls run uncached",
            name,
            exc.type_name,
            exc.reason,
        )
        return None


def _reset_logged() -> None:
    """Forget which one-time warnings were written (tests)."""
    with _logged_lock:
        _logged.clear()
