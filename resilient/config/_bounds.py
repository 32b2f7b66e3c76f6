"""Lower and upper bounds of every duration and size, shared by settings and decorators.

A duration of ``1e10`` seconds loads and then overflows the first blocking wait (a thread's
``wait()`` refuses anything past ~292 years; ``inf`` fails every call): the same table is
checked when the configuration loads and when a decorator is applied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ATTEMPTS",
    "COUNT",
    "DAY",
    "DELAY",
    "DURATION",
    "NOTIONAL",
    "POLICY_ARGUMENTS",
    "POOL",
    "RATE",
    "SERVICE_SETTINGS",
    "TTL",
    "Bound",
    "check_arguments",
    "check_bound",
    "service_bound",
]

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Bound:
    """An allowed range: ``low < value`` (``low_open``) or ``low ≤ value``, and ``value ≤ high``."""

    low: float
    high: float
    low_open: bool
    unit: str

    def describe(self) -> str:
        """The range as written in the README, e.g. ``> 0 and ≤ 86400 seconds``."""
        low = f"> {self.low:g}" if self.low_open else f"≥ {self.low:g}"
        return f"{low} and ≤ {self.high:g} {self.unit}".rstrip()

    def broken(self, value: float) -> str | None:
        """The rule ``value`` breaks, or ``None`` when it is inside the range."""
        if not math.isfinite(value):
            return f"must be a finite number ({self.describe()})"
        too_low = value <= self.low if self.low_open else value < self.low
        if too_low or value > self.high:
            return f"must be {self.describe()}"
        return None


DURATION = Bound(0.0, DAY, low_open=True, unit="seconds")  # timeouts, intervals, recovery
DELAY = Bound(0.0, 3_600.0, low_open=False, unit="seconds")  # waits between attempts
TTL = Bound(0.0, 30 * DAY, low_open=True, unit="seconds")  # cache lifetimes, idle times
COUNT = Bound(1.0, 1_000_000.0, low_open=False, unit="")  # thresholds, calls, windows
ATTEMPTS = Bound(1.0, 100.0, low_open=False, unit="")
POOL = Bound(1.0, 1_000.0, low_open=False, unit="connections")
RATE = Bound(0.0, 1_000_000.0, low_open=False, unit="per second")
NOTIONAL = Bound(0.0, 1e15, low_open=True, unit="(account currency)")

# Decorator arguments checked at decoration time, by policy.
POLICY_ARGUMENTS: Mapping[str, Mapping[str, Bound]] = {
    "timeout": {"seconds": DURATION},
    "breaker": {
        "reset_timeout": DURATION,
        "slow_call_duration": DURATION,
        "failure_threshold": COUNT,
        "half_open_max_calls": COUNT,
        "success_threshold": COUNT,
        "minimum_calls": COUNT,
        "window_size": COUNT,
    },
    "retry": {
        "max_attempts": ATTEMPTS,
        "initial_delay": DELAY,
        "max_delay": DELAY,
        "deadline": DURATION,
    },
    "fallback": {"cache_ttl": TTL},
}


# Numeric keys of the ``services`` section (per service and per method), by key name.
SERVICE_SETTINGS: Mapping[str, Bound] = {
    "timeout": DURATION,
    "order_timeout": DURATION,
    "reset_timeout": DURATION,
    "rate_limit_max_wait": DELAY,
    "initial_delay": DELAY,
    "max_delay": DELAY,
    "cache_ttl": TTL,
    "failure_threshold": COUNT,
    "max_attempts": ATTEMPTS,
}


def service_bound(name: str, value: float) -> str | None:
    """The rule a ``services`` value called ``name`` breaks (``None``: in range or unbounded)."""
    bound = SERVICE_SETTINGS.get(name)
    return bound.broken(float(value)) if bound is not None else None


def check_bound(what: str, value: float, bound: Bound) -> float:
    """``value`` when inside ``bound``.

    Raises:
        ValueError: naming ``what``, the value and the allowed range.
    """
    rule = bound.broken(float(value))
    if rule is not None:
        raise ValueError(f"{what} {rule}, got {value!r}")
    return value


def check_arguments(policy: str, arguments: Mapping[str, Any], what: str) -> None:
    """Check a decorator's numeric ``arguments`` against :data:`POLICY_ARGUMENTS` (``None`` and
    non-numbers are left to the decorator's own checks).

    Raises:
        ValueError: ``what: <argument> must be …, got …``.
    """
    table = POLICY_ARGUMENTS[policy]
    for name, value in arguments.items():
        bound = table.get(name)
        if bound is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        check_bound(f"{what}: {name}", value, bound)
