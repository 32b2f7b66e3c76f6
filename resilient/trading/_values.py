"""How a proxy tells its caller that an answer came from the cache, and reads prices."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["FallbackInfo", "StalePrice", "last_fallback", "mark_stale"]

# Methods of a market-data or broker client that answer the current price of a symbol.
PRICE_METHODS = (
    "get_current_price",
    "get_latest_price",
    "get_last_price",
    "get_price",
    "current_price",
    "latest_price",
    "last_price",
    "fetch_ticker",  # ccxt: a ticker dict with "last"
)


def price_of(value: Any) -> float | None:
    """The positive price in an answer (a number, or a mapping/object with a price field)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value > 0 else None
    for name in ("price", "last", "last_price", "close", "ask_price", "ap", "p", "c"):
        item = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
        if isinstance(item, int | float) and not isinstance(item, bool) and item > 0:
            return float(item)
    return None


class StalePrice(float):
    """A number served from the last-good cache because the live call failed.

    It is a ``float`` (arithmetic and comparisons work unchanged) that also says how old it is.

    Attributes:
        age: seconds since the value was fetched.
        service: the service that served it.
        stale: always ``True`` (a fresh answer is a plain number).
    """

    __slots__ = ("age", "service")
    age: float
    service: str
    stale = True

    def __new__(cls, value: float, age: float, service: str = "") -> StalePrice:
        self = super().__new__(cls, value)
        self.age = age
        self.service = service
        return self

    def __repr__(self) -> str:
        return f"StalePrice({float(self)!r}, age={self.age:.1f}s)"

    def __reduce__(self) -> tuple[type[StalePrice], tuple[float, float, str]]:
        return (type(self), (float(self), self.age, self.service))


@dataclass(frozen=True, slots=True)
class FallbackInfo:
    """The latest cached answer served to the current task or thread."""

    service: str
    method: str
    age: float
    error_type: str


_last: contextvars.ContextVar[FallbackInfo | None] = contextvars.ContextVar(
    "resilient_last_fallback", default=None
)


def last_fallback() -> FallbackInfo | None:
    """The latest cached fallback served in this context (``None`` when every answer was live
    )."""
    return _last.get()


def set_last_fallback(info: FallbackInfo | None) -> None:
    """Record (or clear) the latest cached fallback of this context."""
    _last.set(info)


def mark_stale(value: Any, age: float, service: str) -> Any:
    """``value`` as a :class:`StalePrice` when it is a float, else unchanged."""
    if type(value) is float:
        return StalePrice(float(value), age, service)
    return value
