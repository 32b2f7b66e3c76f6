"""Risk limits and trading switches, checked before any order reaches a broker.

Limits are notional amounts in account currency: quantity × max(limit or stop price, current
market price), the order's worst-case fill. An order that cannot be valued as a finite positive
number is refused. Checks run once per order intent, outside every retry and
fallback, so nothing can route around them.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from resilient._core.exceptions import RiskLimitError, TradingDisabledError
from resilient._core.log import logger
from resilient.config import FeatureSettings, TradingSettings
from resilient.trading._freshness import check_price_age  # stale-price guard
from resilient.trading._orders import OrderIntent

__all__ = [
    "PositionBook",
    "RiskChecker",
    "RiskDecision",
    "check_trading_state",
    "refuse_unvaluable",
]


def check_trading_state(state: str, intent: OrderIntent | None, position: float) -> None:
    """Apply ``trading.state`` to an order (``intent``) or to an undeclared method (``None``).

    ``active`` lets everything through; ``reducing`` only an order whose side is opposite to
    the current position and whose quantity is at most its size; ``halted`` nothing (cancels
    never come here).

    Raises:
        TradingDisabledError: the state refuses it (rule ``trading.state``).
    """
    if state == "active":
        return
    what = "order" if intent is None else f"order for {intent.symbol or 'an unknown symbol'}"
    if state == "reducing" and intent is not None and intent.closing:
        return
    if state == "reducing" and intent is not None:
        units = intent.quantity
        opposite = intent.side != 0 and position != 0 and (intent.side > 0) != (position > 0)
        if opposite and units is not None and units <= abs(position) + 1e-9:
            return
        why = (
            f"it does not reduce the current position ({position:g})"
            if units is not None and intent.side != 0
            else "its side or quantity is unknown, so it cannot be shown to reduce the position"
        )
    elif state == "reducing":
        why = "a method of unknown kind cannot be shown to reduce a position"
    else:
        why = "only cancels go through"
    raise TradingDisabledError(
        "trading.state",
        message=(
            f"{what} refused: trading.state is {state!r} and {why}; set the state back with "
            "factory.set_trading_state('active') or `resilient trading state active`"
        ),
    )


def refuse_unvaluable(intent: OrderIntent) -> None:
    """Refuse an order whose size or price is not a finite positive number (checked even
    with ``trading.risk_check_enabled`` off: such an order is malformed, not risky).

    Raises:
        RiskLimitError: ``intent.problem`` is set.
    """
    if intent.problem is not None:
        what = intent.symbol or "the order"
        raise RiskLimitError(
            "trading.max_order_size",
            None,
            None,
            f"order refused: {what} cannot be valued as a finite positive notional: "
            f"{intent.problem}",
        )


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
        if not (math.isfinite(intent.quantity) and intent.quantity > 0):
            return  # never let a NaN or an infinity into the book
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

        The order is valued at its worst-case fill: ``quantity × max(limit or stop price,
        market price)`` on either side (a limit far through the market fills at the market).

        Args:
            intent: the order.
            market_price: the current price of the symbol (``None`` when unknown).
            position: the current signed position in units.

        Raises:
            RiskLimitError: the order cannot be valued as a finite positive notional (always),
                or a limit is broken and limits are enforced.
        """
        refuse_unvaluable(intent)
        if not self.enabled or intent.closing:
            return RiskDecision(None, None)
        warnings: list[str] = []
        what = intent.symbol or "the order"
        candidates = [p for p in (intent.price, market_price) if p is not None and p > 0]
        price = max(candidates) if candidates and math.isfinite(max(candidates)) else None
        if market_price is not None and market_price > 0:  # stale-price guard (_freshness.py)
            check_price_age(self, intent.symbol, market_price)
        if price is None:
            raise RiskLimitError(
                "trading.max_order_size",
                self.trading.max_order_size,
                None,
                f"order refused: cannot value {what}: it has no price and no market price is "
                "available; pass a limit price or wrap a market-data service with the same "
                "factory",
            )
        if intent.notional is not None:
            notional = intent.notional
            units = intent.notional / price
        else:
            units = intent.quantity or 0.0
            notional = units * price
        if not (math.isfinite(notional) and notional > 0):
            raise RiskLimitError(
                "trading.max_order_size",
                self.trading.max_order_size,
                None,
                f"order refused: the notional of {what} is not a finite positive number",
            )
        if notional > self.trading.max_order_size:
            self._breach(
                "trading.max_order_size",
                self.trading.max_order_size,
                notional,
                f"order refused by trading.max_order_size: notional {notional:,.2f} for {what} "
                f"exceeds the limit {self.trading.max_order_size:,.2f}",
                warnings,
            )
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
