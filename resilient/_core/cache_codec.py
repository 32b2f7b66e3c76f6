"""How fallback-cache values travel through Redis: typed JSON, never pickle.

A value comes back out of Redis equal to what went in and of the same type, all the way down:
``None``, ``bool``, ``int``, ``float`` (``nan`` and infinities included), ``str``, ``bytes``,
``list``, ``tuple``, ``dict`` (any hashable keys: ``{1: 100}`` stays ``{1: 100}``), ``set``,
``frozenset``, ``Decimal``, ``Fraction``, ``datetime`` (naive, fixed-offset or ``ZoneInfo``,
``fold`` kept), ``date``, ``time``, ``timedelta``, ``UUID``, and the dataclasses and enums
registered with :func:`register_cache_type`. Only exact types are encoded: a subclass (an
``OrderedDict``, a ``pandas.Timestamp``) would come back as its base type, so it is not.

A value that cannot be represented is kept in the in-process cache only, with a warning once
per type; its Redis slot then holds a marker, so that an older value there is not served.
Decoding builds only the types above and the registered ones: nothing in Redis can make the
process import or call anything else.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import decimal
import enum
import fractions
import json
import math
import threading
import uuid
import zoneinfo
from typing import Any, TypeVar

from resilient._core.log import logger

__all__ = ["IN_PROCESS_ONLY", "decode_entry", "encode_entry", "register_cache_type"]

T = TypeVar("T", bound=type)

_PREFIX = b"T1"
# The Redis slot of a value that could not go there: read as a miss, so the in-process copy
# (or the call's own error) wins over an older value of the same key.
IN_PROCESS_ONLY = b"T1-"
_MAX_DEPTH = 64

_registered: dict[str, type] = {}
_names: dict[type, str] = {}
_registry_lock = threading.Lock()


def register_cache_type(cls: T, *, name: str | None = None) -> T:
    """Let instances of a dataclass or an enum travel through the Redis fallback cache.

    Usable as a class decorator. A dataclass is stored field by field (the fields must hold
    storable values) and rebuilt without calling ``__init__``; an enum member by its name.
    Every process that reads the cache must register the type under the same name.

    Args:
        cls: a dataclass or an ``enum.Enum`` subclass.
        name: the name stored in Redis (default ``"<module>.<qualname>"``).

    Returns:
        ``cls`` itself.

    Raises:
        TypeError: ``cls`` is neither a dataclass nor an enum.
        ValueError: ``name`` is already registered for another class.
    """
    if not isinstance(cls, type) or not (
        dataclasses.is_dataclass(cls) or issubclass(cls, enum.Enum)
    ):
        raise TypeError(
            f"register_cache_type takes a dataclass or an Enum class, got {cls!r}; "
            "convert other values to one of those (or to built-in types) before caching them"
        )
    key = name if name is not None else f"{cls.__module__}.{cls.__qualname__}"
    with _registry_lock:
        existing = _registered.get(key)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"cache type name {key!r} is already registered for {existing!r}; "
                "pass another name= to register_cache_type"
            )
        _registered[key] = cls
        _names[cls] = key
    return cls


class _Unsupported(Exception):
    def __init__(self, type_name: str) -> None:
        super().__init__(type_name)
        self.type_name = type_name


def _tz_out(tz: datetime.tzinfo | None) -> Any:
    if tz is None:
        return None
    if type(tz) is zoneinfo.ZoneInfo and tz.key is not None:
        return {"z": tz.key}
    if type(tz) is datetime.timezone:
        offset = tz.utcoffset(None)
        out: dict[str, Any] = {"o": [offset.days, offset.seconds, offset.microseconds]}
        name = tz.tzname(None)
        if name != datetime.timezone(offset).tzname(None):  # a named zone keeps its name
            out["n"] = name
        return out
    raise _Unsupported(f"{type(tz).__qualname__} (time zone)")


def _tz_in(data: Any) -> datetime.tzinfo | None:
    if data is None:
        return None
    if "z" in data:
        return zoneinfo.ZoneInfo(data["z"])
    days, seconds, micros = data["o"]
    offset = datetime.timedelta(days, seconds, micros)
    if "n" in data:
        return datetime.timezone(offset, data["n"])
    return datetime.timezone(offset)


def _out(value: Any, depth: int) -> Any:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if abs(value) < 2**53 else {"$": "int", "v": format(value, "x")}
    if kind is float:
        return value if math.isfinite(value) else {"$": "float", "v": repr(value)}
    if depth >= _MAX_DEPTH:
        raise _Unsupported(f"{kind.__qualname__} nested deeper than {_MAX_DEPTH} levels")
    inner = depth + 1
    if kind is list:
        return [_out(item, inner) for item in value]
    if kind is dict:
        if all(type(k) is str for k in value) and "$" not in value:
            return {k: _out(v, inner) for k, v in value.items()}
        return {"$": "dict", "v": [[_out(k, inner), _out(v, inner)] for k, v in value.items()]}
    if kind is tuple:
        return {"$": "tuple", "v": [_out(item, inner) for item in value]}
    if kind is set or kind is frozenset:
        return {"$": kind.__name__, "v": [_out(item, inner) for item in value]}
    if kind is bytes:
        return {"$": "bytes", "v": base64.b64encode(value).decode("ascii")}
    if kind is decimal.Decimal:
        return {"$": "decimal", "v": str(value)}
    if kind is fractions.Fraction:
        return {"$": "fraction", "v": [_out(value.numerator, 0), _out(value.denominator, 0)]}
    if kind is datetime.datetime:
        naive = value.replace(tzinfo=None, fold=0).isoformat()
        return {"$": "datetime", "v": naive, "tz": _tz_out(value.tzinfo), "fold": value.fold}
    if kind is datetime.date:
        return {"$": "date", "v": value.isoformat()}
    if kind is datetime.time:
        naive = value.replace(tzinfo=None, fold=0).isoformat()
        return {"$": "time", "v": naive, "tz": _tz_out(value.tzinfo), "fold": value.fold}
    if kind is datetime.timedelta:
        return {"$": "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if kind is uuid.UUID:
        return {"$": "uuid", "v": str(value)}
    name = _names.get(kind)
    if name is None:
        raise _Unsupported(kind.__qualname__)
    if isinstance(value, enum.Enum):
        return {"$": "enum", "n": name, "v": value.name}
    fields = {f.name: _out(getattr(value, f.name), inner) for f in dataclasses.fields(value)}
    return {"$": "dataclass", "n": name, "f": fields}


def _build_dataclass(cls: Any, fields: dict[str, Any]) -> Any:
    obj = object.__new__(cls)  # no __init__: the stored fields are the state
    for field in dataclasses.fields(cls):
        object.__setattr__(obj, field.name, fields[field.name])  # frozen classes too
    return obj


def _in(obj: dict[str, Any]) -> Any:
    """``json.loads`` object hook: rebuild a tagged value (inner values already rebuilt)."""
    tag = obj.get("$")
    if tag is None:
        return obj
    value: Any = obj.get("v")
    if tag == "tuple":
        return tuple(value)
    if tag == "dict":
        return dict(value)
    if tag == "set":
        return set(value)
    if tag == "frozenset":
        return frozenset(value)
    if tag == "bytes":
        return base64.b64decode(value, validate=True)
    if tag == "int":
        return int(value, 16)
    if tag == "float":
        return float(value)
    if tag == "decimal":
        return decimal.Decimal(value)
    if tag == "fraction":
        return fractions.Fraction(*value)
    if tag == "datetime":
        naive = datetime.datetime.fromisoformat(value)
        return naive.replace(tzinfo=_tz_in(obj["tz"]), fold=obj["fold"])
    if tag == "date":
        return datetime.date.fromisoformat(value)
    if tag == "time":
        naive_time = datetime.time.fromisoformat(value)
        return naive_time.replace(tzinfo=_tz_in(obj["tz"]), fold=obj["fold"])
    if tag == "timedelta":
        return datetime.timedelta(*value)
    if tag == "uuid":
        return uuid.UUID(value)
    cls = _registered[obj["n"]]  # KeyError: a type this process did not register
    if tag == "enum" and issubclass(cls, enum.Enum):
        return cls[value]
    if tag == "dataclass" and dataclasses.is_dataclass(cls):
        return _build_dataclass(cls, obj["f"])
    raise ValueError(f"unknown cache value tag {tag!r}")


_warned: set[str] = set()
_warned_lock = threading.Lock()


def encode_entry(value: Any, stored_at: float, ttl: float) -> bytes:
    """The Redis payload for ``value``, or :data:`IN_PROCESS_ONLY` when it cannot be
    represented (a warning is logged once per type)."""
    try:
        body = {"v": _out(value, 0), "t": stored_at, "ttl": ttl}
        return _PREFIX + json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
    except _Unsupported as exc:
        what = exc.type_name
    except Exception as exc:  # a registered dataclass whose attribute read fails, ...
        what = f"{type(value).__qualname__} ({type(exc).__name__})"
    with _warned_lock:
        first = what not in _warned
        _warned.add(what)
    if first:
        logger.warning(
            "a fallback-cache value holding {} cannot be stored in Redis; it is kept in this "
            "process only (register dataclasses and enums with "
            "resilient.register_cache_type)",
            what,
        )
    return IN_PROCESS_ONLY


def decode_entry(raw: bytes) -> tuple[Any, float, float] | None:
    """``(value, stored_at, ttl)`` from a Redis payload, or ``None`` for anything else: a
    value kept in-process, an older format, a type not registered here, damaged data."""
    if not raw.startswith(_PREFIX) or raw == IN_PROCESS_ONLY:
        return None
    try:
        data = json.loads(raw[len(_PREFIX) :], object_hook=_in)
        return data["v"], float(data["t"]), float(data["ttl"])
    except Exception:  # anything unreadable is a miss, never an error
        return None
