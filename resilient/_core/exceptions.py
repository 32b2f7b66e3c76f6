"""The package's own exceptions.

ResilientError
├── ConfigError (also ValueError)         invalid configuration, raised at load
├── CircuitOpenError (also pybreaker.CircuitBreakerError)   a breaker refused the call
├── BulkheadFullError                     a bulkhead had no slot and no queue place
├── TimeoutError (also builtins.TimeoutError)
└── RiskLimitError                        an order was refused before reaching the broker
    └── TradingDisabledError              live/paper trading switched off for this order

Context lives in attributes, never only in the message, so that nothing secret has to be
formatted into text. Errors raised by the wrapped functions are always re-raised as they are.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass

from resilient._core.pybreaker_import import pybreaker

__all__ = [
    "BulkheadFullError",
    "CircuitOpenError",
    "ConfigError",
    "ConfigProblem",
    "ResilientError",
    "RiskLimitError",
    "TimeoutError",
    "TradingDisabledError",
]


class ResilientError(Exception):
    """Base class of every error the package raises on its own account."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One invalid setting: where it is, which rule it breaks and how to fix it."""

    key: str
    rule: str
    fix: str
    env: str

    def __str__(self) -> str:
        return f"[{self.env}] {self.key} — {self.rule}. Fix: {self.fix}"


class ConfigError(ResilientError, ValueError):
    """Invalid configuration. ``problems`` lists every broken rule; no value is ever shown."""

    def __init__(self, problems: Sequence[ConfigProblem] | str, *, env: str = "") -> None:
        if isinstance(problems, str):
            problems = [ConfigProblem(key="", rule=problems, fix="see the message", env=env)]
        self.problems: tuple[ConfigProblem, ...] = tuple(problems)
        self.env = env or (self.problems[0].env if self.problems else "")
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        super().__init__(
            f"invalid configuration for environment {self.env!r} "
            f"({count} problem{'s' if count != 1 else ''}):\n{lines}"
        )


class CircuitOpenError(ResilientError, pybreaker.CircuitBreakerError):
    """The circuit ``name`` is open (or half-open with no trial permit left). Also a
    ``pybreaker.CircuitBreakerError``, so code written for pybreaker catches it.

    Attributes:
        name: the breaker's name.
        state: ``"open"`` or ``"half-open"``.
        retry_after: seconds until the next trial call is allowed (0 when unknown).
    """

    def __init__(self, name: str, state: str = "open", retry_after: float = 0.0) -> None:
        self.name = name
        self.state = state
        self.retry_after = retry_after
        super().__init__(f"circuit {name!r} is {state}; next trial in {retry_after:.3f}s")

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, str, float]]:
        return (type(self), (self.name, self.state, self.retry_after))


class TimeoutError(ResilientError, builtins.TimeoutError):
    """A call took longer than its ``timeout`` (or its deadline) and was cancelled."""

    def __init__(self, seconds: float, name: str = "") -> None:
        self.seconds = seconds
        self.name = name
        where = f" {name!r}" if name else ""
        super().__init__(f"call{where} timed out after {seconds:.3f}s")

    def __reduce__(self) -> tuple[type[TimeoutError], tuple[float, str]]:
        return (type(self), (self.seconds, self.name))


class RiskLimitError(ResilientError):
    """An order was refused by a risk rule before the broker was called.

    Attributes:
        rule: the setting that refused it (for example ``"trading.max_order_size"``).
        limit: the configured limit.
        value: the order's value under that rule.
    """

    def __init__(
        self,
        rule: str,
        limit: float | None = None,
        value: float | None = None,
        message: str | None = None,
    ) -> None:
        self.rule = rule
        self.limit = limit
        self.value = value
        if message is None:
            message = f"order refused by {rule}: {value} exceeds the limit {limit}"
        super().__init__(message)


class TradingDisabledError(RiskLimitError):
    """Orders of this kind (live or paper) are switched off by a feature flag."""


class BulkheadFullError(ResilientError):
    """A bulkhead refused the call: every slot busy and the queue full, the wait in the queue
    longer than ``queue_timeout``, or the queue place taken by a call of higher priority.
    The function was not called (``request_sent`` is ``False``).

    Attributes:
        name: the bulkhead's name.
        max_concurrent: its concurrent-call limit.
        max_queue: its queue length.
        priority: the refused call's priority class (``"cancel"``, ``"order"``, ``"read"``…).
        reason: ``"queue full"``, ``"queue timeout"`` or ``"displaced"``.
    """

    request_sent = False

    def __init__(
        self, name: str, max_concurrent: int, max_queue: int, priority: str, reason: str
    ) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.priority = priority
        self.reason = reason
        super().__init__(
            f"bulkhead {name!r} refused a {priority} call ({reason}; {max_concurrent} "
            f"concurrent, queue {max_queue}) — raise max_concurrent/max_queue or "
            "bulkhead_queue_timeout if the dependency can take more"
        )

    def __reduce__(self) -> tuple[type[BulkheadFullError], tuple[str, int, int, str, str]]:
        return (
            type(self),
            (self.name, self.max_concurrent, self.max_queue, self.priority, self.reason),
        )
