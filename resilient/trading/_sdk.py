"""What the broker proxy knows of the common SDKs: how they answer a position, how to find
an order by client order id, and their hidden retries."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

from resilient._core.classify import ErrorCategory, classify, http_status
from resilient._core.log import logger
from resilient._core.wrapping import is_async_callable

__all__ = [
    "CCXT_ID_KEY",
    "ccxt_id_key",
    "ccxt_lookup",
    "disable_hidden_retries",
    "is_ccxt",
    "is_order",
    "no_position",
    "quantity_of",
    "with_symbol",
]


def quantity_of(value: Any) -> float | None:
    """The signed quantity in a position answer (a number, or a mapping/object with a quantity
    field; a ``side`` of ``short`` makes an unsigned quantity negative), else ``None``."""
    if isinstance(value, bool) or value is None:
        return None
    number: Any = value
    side: Any = None
    if not isinstance(value, int | float | str):
        number = None
        for name in ("qty", "quantity", "position", "size", "contracts", "amount"):
            item = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
            if item is not None:
                number = item
                break
        side = value.get("side") if isinstance(value, Mapping) else getattr(value, "side", None)
    try:
        qty = float(number)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(qty):
        return None
    side = getattr(side, "value", side)
    if isinstance(side, str) and side.lower() == "short" and qty > 0:
        qty = -qty
    return qty


def no_position(exc: BaseException) -> bool:
    """A position read answered "nothing held" (Alpaca's 404 for get_open_position)."""
    return http_status(exc) in (404, 410) or classify(exc) is ErrorCategory.DATA_UNAVAILABLE


def disable_hidden_retries(client: Any, name: str) -> None:
    """Turn off an SDK's own retries of every call, order POSTs included: the proxy retries,
    and only when that cannot duplicate an order.

    alpaca-py's REST client retries 429/504 answers three times (``retry_attempts=0`` is
    ignored as falsy); ccxt retries failed requests ``options["maxRetriesOnFailure"]`` times.
    """
    module = type(client).__module__ or ""
    if module.startswith("alpaca.") and isinstance(getattr(client, "_retry", None), int):
        if client._retry:
            logger.info(
                "{}: alpaca-py's own retries turned off (the proxy retries, never duplicating "
                "an order)",
                name,
            )
        client._retry = 0
        client._retry_codes = []
    options = getattr(client, "options", None)
    if module.startswith("ccxt") and isinstance(options, dict):
        if options.get("maxRetriesOnFailure"):
            logger.info("{}: ccxt maxRetriesOnFailure turned off (the proxy retries)", name)
        options["maxRetriesOnFailure"] = 0


CCXT_ID_KEY = "clientOrderId"  # ccxt's unified params key; each exchange maps it
# ccxt exchanges whose create_order reads no client order id (ccxt 4.5): an id sent to them
# would not make a retry safe, so none is supplied and their orders are not retried.
_CCXT_WITHOUT_CLIENT_ID = frozenset({"coinspot", "paymium"})


def is_ccxt(client: Any) -> bool:
    """Whether ``client`` is a ccxt exchange (sync or async_support)."""
    return (type(client).__module__ or "").startswith("ccxt") and hasattr(client, "has")


def ccxt_id_key(client: Any) -> str | None:
    """The params key a ccxt exchange reads its client order id from, or ``None``."""
    if not is_ccxt(client) or getattr(client, "id", None) in _CCXT_WITHOUT_CLIENT_ID:
        return None
    return CCXT_ID_KEY


def ccxt_lookup(exchange: Any) -> Callable[..., Any] | None:
    """Find a ccxt order by client order id among the exchange's open, then closed orders
    (ccxt has no unified look-up by client id)."""
    has = getattr(exchange, "has", {}) or {}
    readers = [
        getattr(exchange, name)
        for name, flag in (
            ("fetch_open_orders", "fetchOpenOrders"),
            ("fetch_closed_orders", "fetchClosedOrders"),
            ("fetch_orders", "fetchOrders"),
        )
        if has.get(flag)
    ]
    if not readers:
        return None

    def match(orders: Any, client_order_id: str) -> Any:
        for order in orders or ():
            if isinstance(order, Mapping) and order.get("clientOrderId") == client_order_id:
                return order
        return None

    if is_async_callable(readers[0]):

        async def alookup(client_order_id: str, symbol: str | None = None) -> Any:
            for reader in readers:
                found = match(await reader(symbol), client_order_id)
                if found is not None:
                    return found
            return None

        alookup.wants_symbol = True  # type: ignore[attr-defined]
        return alookup

    def lookup(client_order_id: str, symbol: str | None = None) -> Any:
        for reader in readers:
            found = match(reader(symbol), client_order_id)
            if found is not None:
                return found
        return None

    lookup.wants_symbol = True  # type: ignore[attr-defined]
    return lookup


def with_symbol(lookup: Callable[..., Any] | None, symbol: str | None) -> Any:
    """A look-up that needs the order's symbol (ccxt), bound to it."""
    if lookup is not None and getattr(lookup, "wants_symbol", False):
        return functools.partial(lookup, symbol=symbol)
    return lookup


def is_order(value: Any) -> bool:
    """Whether a look-up answered an order (not ``None``, an empty list or mapping)."""
    if value is None:
        return False
    if isinstance(value, list | tuple | Mapping):
        return len(value) > 0
    return True
