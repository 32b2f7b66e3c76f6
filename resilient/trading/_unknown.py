"""Orders whose outcome is unknown: the error raised for them and the tracker that keeps them
until they are reconciled with the broker."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from resilient._core.clock import get_clock
from resilient._core.exceptions import ResilientError

__all__ = ["OrderStatusUnknown", "UnknownOrder", "UnknownOrders"]


class OrderStatusUnknown(ResilientError):
    """An order may or may not have been executed: its answer was lost (a timeout or a reset
    after it may have been sent) and looking it up by its client order id did not find it.

    The order is kept by the factory until :meth:`ResilienceFactory.reconcile` finds it (or
    finds that it does not exist); do not send it again under a new id before then. The
    original error is the ``__cause__``.

    Attributes:
        client_order_id: the order's client order id (``None`` when the broker method takes
            none: reconcile then compares the broker's open orders).
        service: the service the order was sent to.
        method: the broker method that was called.
        symbol: the order's symbol, when known.
    """

    def __init__(
        self,
        client_order_id: str | None,
        *,
        service: str = "",
        method: str = "",
        symbol: str | None = None,
    ) -> None:
        self.client_order_id = client_order_id
        self.service = service
        self.method = method
        self.symbol = symbol
        key = f"client order id {client_order_id!r}" if client_order_id else "no client order id"
        super().__init__(
            f"outcome of {method}() on {service!r} is unknown ({key}): the broker may hold the "
            "order; it is kept for factory.reconcile() — do not resend it under a new id"
        )

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (self.client_order_id, self.service, self.method, self.symbol),
        )


def _rebuild(
    client_order_id: str | None, service: str, method: str, symbol: str | None
) -> OrderStatusUnknown:
    return OrderStatusUnknown(client_order_id, service=service, method=method, symbol=symbol)


@dataclass(slots=True)
class UnknownOrder:
    """One order of unknown outcome."""

    client_order_id: str | None
    service: str
    method: str
    symbol: str | None
    error_type: str
    since: float = field(default_factory=time.time)  # wall clock, for operators
    started: float = field(default_factory=lambda: get_clock().monotonic())
    checks: int = 0
    # How to find it again and what to count when it is found (never shown in health).
    lookup: Any = field(default=None, repr=False, compare=False)
    intent: Any = field(default=None, repr=False, compare=False)

    @property
    def age(self) -> float:
        """Seconds since the order's outcome became unknown."""
        return max(0.0, get_clock().monotonic() - self.started)

    def to_dict(self) -> dict[str, Any]:
        """The order as health data (never the order's arguments)."""
        return {
            "client_order_id": self.client_order_id,
            "service": self.service,
            "method": self.method,
            "symbol": self.symbol,
            "error_type": self.error_type,
            "age_seconds": round(self.age, 3),
            "checks": self.checks,
        }


class UnknownOrders:
    """The orders of unknown outcome of one factory, by service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: list[UnknownOrder] = []

    def add(self, order: UnknownOrder) -> None:
        """Keep ``order`` until it is reconciled."""
        with self._lock:
            self._orders.append(order)

    def remove(self, order: UnknownOrder) -> None:
        """Forget ``order`` (found, or proven absent)."""
        with self._lock:
            if order in self._orders:
                self._orders.remove(order)

    def pending(self, service: str | None = None) -> list[UnknownOrder]:
        """The orders still unknown (of ``service``, or all)."""
        with self._lock:
            return [o for o in self._orders if service is None or o.service == service]

    def snapshot(self, service: str | None = None) -> list[dict[str, Any]]:
        """The unknown orders as health data, oldest first."""
        return [o.to_dict() for o in self.pending(service)]
