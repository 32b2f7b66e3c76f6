"""Reading an order out of a broker call, and giving it a client order id.

Broker SDKs spell orders differently: keyword arguments (``place_order(symbol, qty, side,
limit_price=...)``), a request object (alpaca-py's ``submit_order(order_data=...)``) or a dict.
:func:`read_order` looks at all three, by the field names the common SDKs use.
"""

from __future__ import annotations

import copy
import inspect
import math
import numbers
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

__all__ = [
    "CLIENT_ID_FIELDS",
    "OrderCall",
    "OrderIntent",
    "new_client_order_id",
    "prepare_order_call",
]

SYMBOL_FIELDS = ("symbol", "ticker", "instrument", "asset", "security")
QUANTITY_FIELDS = (
    "qty",
    "quantity",
    "size",
    "shares",
    "units",
    "volume",
    "totalquantity",
    "total_quantity",
)
NOTIONAL_FIELDS = ("notional",)
SIDE_FIELDS = ("side", "action", "direction")
PRICE_FIELDS = ("limit_price", "price", "lmt_price", "lmtprice", "stop_price", "limit")
CLIENT_ID_FIELDS = (
    "client_order_id",
    "clientorderid",
    "client_id",
    "idempotency_key",
    "order_ref",
    "orderref",
    "client_order_ref",
)
_SCALARS = (str, bytes, numbers.Number, bool, type(None), Enum)  # Decimal, numpy scalars too
# Arguments read as numbers whatever their type (a list or complex quantity is unreadable,
# which refuses the order, rather than absent, which would skip the risk check).
_NUMERIC_FIELDS = frozenset((*QUANTITY_FIELDS, *NOTIONAL_FIELDS, *PRICE_FIELDS))


def new_client_order_id() -> str:
    """A fresh client order id (32 hex characters: accepted by every common broker)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What an order asks for, as far as the call shows it."""

    symbol: str | None
    quantity: float | None  # absolute size in units
    side: int  # +1 buy, -1 sell, 0 unknown
    price: float | None  # limit/stop price when the order has one
    notional: float | None  # a notional amount given instead of a quantity
    client_order_id: str | None
    # a quantity was given but is not a number (NaN, "abc", a list): the order cannot be valued
    quantity_unreadable: bool = False


def _norm(name: str) -> str:
    return name.lower().replace("-", "_")


def _fields_of(value: Any) -> dict[str, Any] | None:
    """The named fields of an order-like argument (mapping, dataclass, model, plain object)."""
    if isinstance(value, _SCALARS) or callable(value):
        return None
    if isinstance(value, Mapping):
        return {_norm(str(k)): v for k, v in value.items()}
    found: dict[str, Any] = {}
    for name in (
        *SYMBOL_FIELDS,
        *QUANTITY_FIELDS,
        *NOTIONAL_FIELDS,
        *SIDE_FIELDS,
        *PRICE_FIELDS,
        *CLIENT_ID_FIELDS,
        "totalQuantity",
        "lmtPrice",
        "orderRef",
        "clientOrderId",
    ):
        try:
            item = getattr(value, name)
        except Exception:
            continue
        if not callable(item):
            found[_norm(name)] = item
    return found or None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    except OverflowError:  # an int beyond float range is an infinite size, not an error
        return math.inf if value > 0 else -math.inf
    return number if number == number else None  # NaN is no number


def _side(value: Any) -> int:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return 1 if value > 0 else -1 if value < 0 else 0
    text = str(value).lower() if value is not None else ""
    if any(word in text for word in ("buy", "long", "bid", "cover")):
        return 1
    if any(word in text for word in ("sell", "short", "ask")):
        return -1
    return 0


def _first(data: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        if name in data and data[name] is not None:
            return data[name]
    return None


@dataclass(slots=True)
class OrderCall:
    """A broker call prepared for sending: its arguments (with a client order id supplied where
    the method takes one) and the order it describes."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    intent: OrderIntent
    has_idempotency_key: bool


def _client_id_param(sig: inspect.Signature | None) -> str | None:
    if sig is None:
        return None
    for name in sig.parameters:
        if _norm(name) in CLIENT_ID_FIELDS:
            return name
    return None


def _with_client_id(value: Any, field: str, client_id: str) -> Any:
    """``value`` (an order object or dict) with ``field`` set to ``client_id``; never mutates
    the caller's object."""
    if isinstance(value, Mapping):
        updated = dict(value)
        updated[field] = client_id
        return updated
    model_copy = getattr(value, "model_copy", None)  # pydantic v2 (alpaca-py requests)
    if callable(model_copy):
        try:
            return model_copy(update={field: client_id})
        except Exception:
            pass
    try:
        clone = copy.copy(value)
        setattr(clone, field, client_id)
        return clone
    except Exception:
        return value


def prepare_order_call(
    sig: inspect.Signature | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    supply_client_id: bool = True,
) -> OrderCall:
    """Read the order from a call and supply a client order id when the method accepts one and
    the caller gave none. The same :class:`OrderCall` is then used for every attempt."""
    arguments: dict[str, Any] = {}
    bound: inspect.BoundArguments | None = None
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            bound = None
    if bound is not None:
        for name, value in bound.arguments.items():
            param = sig.parameters[name] if sig is not None else None
            if param is not None and param.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update({_norm(k): v for k, v in value.items()})
            elif param is not None and param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            else:
                arguments[_norm(name)] = value
    else:
        arguments.update({_norm(k): v for k, v in kwargs.items()})
    data: dict[str, Any] = {}
    container: tuple[str, str] | None = None  # (argument name, field) of an order object's id
    for name, value in arguments.items():
        inner = _fields_of(value)
        if inner:
            for key, item in inner.items():
                data.setdefault(key, item)
            for field in CLIENT_ID_FIELDS:
                if field in inner and container is None:
                    container = (name, field)
    for name, value in arguments.items():
        if isinstance(value, _SCALARS) or (name in _NUMERIC_FIELDS and _fields_of(value) is None):
            data[name] = value if value is not None else data.get(name)

    client_id = _first(data, CLIENT_ID_FIELDS)
    out_args, out_kwargs = tuple(args), dict(kwargs)
    if client_id is None and supply_client_id:
        id_param = _client_id_param(sig)
        if id_param is not None and bound is not None:
            client_id = new_client_order_id()
            out_kwargs[id_param] = client_id
            if id_param in bound.arguments:  # given explicitly as None
                bound.arguments[id_param] = client_id
                out_args, out_kwargs = tuple(bound.args), dict(bound.kwargs)
        elif container is not None and bound is not None:
            arg_name, field = container
            original = next(k for k in bound.arguments if _norm(k) == arg_name)
            attr = _attr_name(bound.arguments[original], field)
            client_id = new_client_order_id()
            bound.arguments[original] = _with_client_id(bound.arguments[original], attr, client_id)
            out_args, out_kwargs = tuple(bound.args), dict(bound.kwargs)
            if _first(_fields_of(bound.arguments[original]) or {}, CLIENT_ID_FIELDS) != client_id:
                client_id = None  # the object refused the id: no idempotency key after all

    raw_quantity = _first(data, QUANTITY_FIELDS)
    quantity = _number(raw_quantity)
    intent = OrderIntent(
        symbol=str(_first(data, SYMBOL_FIELDS))
        if _first(data, SYMBOL_FIELDS) is not None
        else None,
        quantity=abs(quantity) if quantity is not None else None,
        side=_side(_first(data, SIDE_FIELDS))
        or ((1 if quantity > 0 else -1) if quantity and _first(data, SIDE_FIELDS) is None else 0),
        price=_number(_first(data, PRICE_FIELDS)),
        notional=_number(_first(data, NOTIONAL_FIELDS)),
        client_order_id=str(client_id) if client_id is not None else None,
        quantity_unreadable=quantity is None and raw_quantity is not None,
    )
    return OrderCall(out_args, out_kwargs, intent, client_id is not None)


def _attr_name(value: Any, field: str) -> str:
    """The real spelling of a normalised field on ``value``."""
    if isinstance(value, Mapping):
        for key in value:
            if _norm(str(key)) == field:
                return str(key)
        return field
    for name in dir(value):
        if _norm(name) == field:
            return name
    return field
