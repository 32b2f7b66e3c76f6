"""Risk limits and trading switches, checked before any order reaches a broker.

Limits are notional amounts in account currency (quantity × price); an order without a price is
valued at the current market price. Checks run once per order intent, outside every retry and
fallback, so nothing can route around them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .._exceptions import RiskLimitError
from .._logging import logger
from ..config import FeatureSettings, TradingSettings
from ._orders import OrderIntent

__all__ = ["PositionBook", "RiskChecker", "RiskDecision"]


@dataclass(frozen=True, slots=True)
class RiskDecision:
    """The outcome of a risk check (only returned when the order may go ahead)."""

    notional: float | None
    resulting_position: float | None
    warnings: tuple[str, ...] = ()


class PositionBook:
    """Net quantity per symbol of the orders sent through one broker proxy.

    Used when the broker cannot report a position. Orders are counted as filled as soon as the
    broker accepts them, which over-states exposure for resting orders: the safe side.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._net: dict[str, float] = {}

    def get(self, symbol: str) -> float:
        """Net signed quantity of ``symbol``."""
        with self._lock:
            return self._net.get(symbol, 0.0)

    def apply(self, intent: OrderIntent) -> None:
        """Count an accepted order."""
        if intent.symbol is None or intent.quantity is None:
            return
        sign = intent.side or 1
        with self._lock:
            self._net[intent.symbol] = self._net.get(intent.symbol, 0.0) + sign * intent.quantity

    def snapshot(self) -> dict[str, float]:
        """Every non-zero position."""
        with self._lock:
            return {k: v for k, v in self._net.items() if v}


class RiskChecker:
    """Applies ``trading.max_order_size`` and ``trading.max_position_size``.

    ``trading.risk_check_enabled`` turns the checks on; ``features.risk_limits_enforced`` decides
    whether a breach refuses the order (``RiskLimitError``) or is only logged as a warning.
    """

    def __init__(self, trading: TradingSettings, features: FeatureSettings) -> None:
        self.trading = trading
        self.features = features

    @property
    def enabled(self) -> bool:
        """Whether orders are checked at all."""
        return self.trading.risk_check_enabled

    @property
    def enforced(self) -> bool:
        """Whether a breach refuses the order."""
        return self.trading.risk_check_enabled and self.features.risk_limits_enforced

    def check(
        self, intent: OrderIntent, *, market_price: float | None, position: float
    ) -> RiskDecision:
        """Check one order.

        Args:
            intent: the order.
            market_price: the current price of the symbol (``None`` when unknown).
            position: the current signed position in units.

        Raises:
            RiskLimitError: a limit is broken (or the order cannot be valued) and limits are
                enforced.
        """
        if not self.enabled:
            return RiskDecision(None, None)
        warnings: list[str] = []
        if market_price is not None and not 0 < market_price < math.inf:
            market_price = None  # a 0, negative or NaN tick values nothing
        price = intent.price if intent.price is not None and intent.price > 0 else market_price
        what = intent.symbol or "the order"

        if intent.quantity_unreadable and intent.notional is None:
            message = (
                f"cannot value {what}: its quantity is not a number; pass the quantity as an "
                "int, float, Decimal or numeric string"
            )
            self._breach(
                "trading.max_order_size", self.trading.max_order_size, None, message, warnings
            )
            return RiskDecision(None, None, tuple(warnings))

        if intent.quantity is not None and price is None and intent.notional is None:
            message = (
                f"cannot value {what}: it has no price and no market price is available; "
                "pass a limit price or wrap a market-data service with the same factory"
            )
            self._breach(
                "trading.max_order_size", self.trading.max_order_size, None, message, warnings
            )
            return RiskDecision(None, None, tuple(warnings))

        notional: float | None = None
        if intent.notional is not None:
            notional = abs(intent.notional)
        elif intent.quantity is not None and price is not None:
            notional = intent.quantity * price
        if notional is not None and notional > self.trading.max_order_size:
            self._breach(
                "trading.max_order_size",
                self.trading.max_order_size,
                notional,
                f"order refused by trading.max_order_size: notional {notional:,.2f} for {what} "
                f"exceeds the limit {self.trading.max_order_size:,.2f}",
                warnings,
            )

        resulting: float | None = None
        units = intent.quantity
        if units is None and intent.notional is not None and price:
            units = abs(intent.notional) / price
        if units is not None and price is not None:
            if intent.side > 0:
                after = position + units
            elif intent.side < 0:
                after = position - units
            else:  # unknown direction: assume the one that grows the position
                after = abs(position) + units
            resulting = abs(after) * price
            grows = abs(after) > abs(position)
            if grows and resulting > self.trading.max_position_size:
                self._breach(
                    "trading.max_position_size",
                    self.trading.max_position_size,
                    resulting,
                    f"order refused by trading.max_position_size: the resulting position in "
                    f"{what} would be {resulting:,.2f}, above the limit "
                    f"{self.trading.max_position_size:,.2f}",
                    warnings,
                )
        return RiskDecision(notional, resulting, tuple(warnings))

    def _breach(
        self, rule: str, limit: float, value: float | None, message: str, warnings: list[str]
    ) -> None:
        if self.enforced:
            raise RiskLimitError(rule, limit, value, message)
        warnings.append(message)
        logger.warning(
            "risk limit not enforced (features.risk_limits_enforced = false): {}", message
        )
