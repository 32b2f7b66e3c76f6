"""The stale-data guard: every price the trading layer uses carries its age, and no order is
valued on a price older than ``trading.max_price_age``.

Prices reach an order's risk check from a live read (observed now), a cached fallback
(:class:`~resilient.trading.StalePrice`, which knows its age), a stream
(:meth:`ResilienceFactory.record_price`, with the message's timestamp) or the last price
remembered. Each becomes a :class:`TimedPrice`; the freshest usable one values the order, and
one older than its limit refuses it with ``RiskLimitError(rule="stale_price")``. Reads can ask
``max_age=`` and get :class:`StaleDataError` instead of an old cached answer.

Ages are measured on the monotonic clock in force; a timestamp from another machine (an
exchange's) is converted once, assuming the wall clocks agree to well under the limit.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from resilient._core.clock import get_clock
from resilient._core.exceptions import ResilientError, RiskLimitError
from resilient._core.log import logger
from resilient.trading._values import FallbackInfo, StalePrice, last_fallback, price_of

if TYPE_CHECKING:
    from resilient.config import Config
    from resilient.trading._risk import RiskChecker

__all__ = [
    "StaleDataError",
    "TimedPrice",
    "check_price_age",
    "fresh_enough",
    "fresher",
    "stamp",
    "with_max_age",
]

STALE_RULE = "stale_price"


class TimedPrice(float):
    """A price that knows when it was observed (a ``float`` for every other purpose).

    Args:
        value: the price (finite, > 0).
        timestamp: when it was observed, in wall-clock seconds since the epoch (an exchange
            timestamp); default: now.
        at: the same on the monotonic clock in force (instead of ``timestamp``).
        source: the service or stream that produced it.

    Raises:
        ValueError: ``value`` is not a finite positive number.
    """

    __slots__ = ("at", "source")
    at: float
    source: str

    def __new__(
        cls,
        value: float,
        *,
        timestamp: float | None = None,
        at: float | None = None,
        source: str = "",
    ) -> TimedPrice:
        if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
            raise ValueError(f"a price must be a finite positive number, got {value!r}")
        self = super().__new__(cls, value)
        clock = get_clock()
        if at is None:
            now = clock.monotonic()
            at = now if timestamp is None else now - (clock.time() - float(timestamp))
        self.at = float(at)
        self.source = source
        return self

    @property
    def age(self) -> float:
        """Seconds since the price was observed."""
        return max(0.0, get_clock().monotonic() - self.at)

    @property
    def timestamp(self) -> float:
        """When it was observed (wall-clock seconds since the epoch)."""
        clock = get_clock()
        return clock.time() - (clock.monotonic() - self.at)

    def __repr__(self) -> str:
        return f"TimedPrice({float(self)!r}, age={self.age:.1f}s, source={self.source!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (float(self), self.timestamp, self.source))


def _rebuild(value: float, timestamp: float, source: str) -> TimedPrice:
    return TimedPrice(value, timestamp=timestamp, source=source)


class StaleDataError(ResilientError):
    """A read asked for ``max_age=`` and only an older (cached) answer was available.

    Attributes:
        service / method: what was read.
        age: the age of the answer that was refused (seconds).
        max_age: the freshness asked for.
        error_type: why the live read failed (the class name of its error).
    """

    def __init__(
        self, service: str, method: str, age: float, max_age: float, error_type: str = ""
    ) -> None:
        why = f" after {error_type}" if error_type else ""
        self.service = service
        self.method = method
        self.age = age
        self.max_age = max_age
        self.error_type = error_type
        super().__init__(
            f"{service}.{method}: only a cached answer {age:.1f}s old was available{why}, "
            f"older than max_age={max_age:g}s; retry later or accept older data"
        )


def stamp(value: Any, before: FallbackInfo | None = None, source: str = "") -> TimedPrice | None:
    """The price in a read's answer as a :class:`TimedPrice` (``None``: no price in it).

    ``before`` is :func:`last_fallback` taken before the read: when the read served a cached
    answer of another type than ``float``, its age comes from the fallback record."""
    if isinstance(value, TimedPrice):
        return value
    price = price_of(value)
    if price is None:
        return None
    now = get_clock().monotonic()
    if isinstance(value, StalePrice):
        return TimedPrice(price, at=now - value.age, source=value.service)
    info = last_fallback()
    if info is not None and info is not before:
        return TimedPrice(price, at=now - info.age, source=info.service)
    return TimedPrice(price, at=now, source=source)


def _age(price: float) -> float | None:
    if isinstance(price, TimedPrice | StalePrice):
        return price.age
    return None  # a plain number: the caller vouches for it


def _source(price: float) -> str:
    if isinstance(price, TimedPrice):
        return price.source
    if isinstance(price, StalePrice):
        return price.service
    return ""


def fresh_enough(price: float, config: Config, symbol: str | None) -> bool:
    """Whether ``price`` is young enough to value an order in ``symbol``."""
    age = _age(price)
    limit = config.trading.max_price_age.limit_for(symbol, _source(price))
    return age is None or limit is None or age <= limit


def fresher(a: TimedPrice | None, b: TimedPrice | None) -> TimedPrice | None:
    """The younger of two prices (either may be missing)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a.at >= b.at else b


def check_price_age(checker: RiskChecker, symbol: str | None, price: float | None) -> None:
    """Refuse an order valued on ``price`` when it is older than ``trading.max_price_age``.

    Raises:
        RiskLimitError: ``rule="stale_price"``, ``limit`` the age limit, ``value`` the age
            (when risk limits are enforced; otherwise a warning is logged).
    """
    if price is None or not checker.enabled:
        return
    age = _age(price)
    if age is None:
        return
    source = _source(price)
    limit = checker.trading.max_price_age.limit_for(symbol, source)
    if limit is None or age <= limit:
        return
    origin = f" from {source}" if source else ""
    message = (
        f"order refused by trading.max_price_age (stale_price): the price of "
        f"{symbol or 'the order'}{origin} is {age:.1f}s old, older than the limit {limit:g}s; "
        "wait for fresh market data (a limit order is valued at the market price too)"
    )
    if checker.enforced:
        raise RiskLimitError(STALE_RULE, limit, age, message)
    logger.warning("risk limit not enforced (features.risk_limits_enforced = false): {}", message)


def with_max_age(
    call: Callable[..., Any], fn: Callable[..., Any], service: str, method: str, asynchronous: bool
) -> Callable[..., Any]:
    """Give a read the ``max_age=`` keyword (unless ``fn`` has its own): an answer older than
    that raises :class:`StaleDataError` instead of being returned."""
    try:
        if "max_age" in inspect.signature(fn).parameters:
            return call
    except (TypeError, ValueError):
        pass

    def checked(value: Any, before: FallbackInfo | None, max_age: float) -> Any:
        info = last_fallback()
        served = info if info is not None and info is not before else None
        age = value.age if isinstance(value, TimedPrice | StalePrice) else None
        if age is None and served is not None:
            age = served.age
        if age is not None and age > max_age:
            raise StaleDataError(
                service, method, age, max_age, served.error_type if served is not None else ""
            )
        return value

    def limit_of(raw: Any) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw >= 0:
            raise ValueError(f"{service}.{method}: max_age must be seconds ≥ 0, got {raw!r}")
        return float(raw)

    if asynchronous:

        @functools.wraps(call)
        async def aread(*args: Any, **kwargs: Any) -> Any:
            if "max_age" not in kwargs:
                return await call(*args, **kwargs)
            max_age = limit_of(kwargs.pop("max_age"))
            before = last_fallback()
            return checked(await call(*args, **kwargs), before, max_age)

        return aread

    @functools.wraps(call)
    def read(*args: Any, **kwargs: Any) -> Any:
        if "max_age" not in kwargs:
            return call(*args, **kwargs)
        max_age = limit_of(kwargs.pop("max_age"))
        before = last_fallback()
        return checked(call(*args, **kwargs), before, max_age)

    return read
