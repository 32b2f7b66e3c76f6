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
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import Enum
from typing import Any

__all__ = [
    "CLIENT_ID_FIELDS",
    "OrderCall",
    "OrderIntent",
    "new_client_order_id",
    "prepare_order_call",
]

SYMBOL_FIELDS = (
    "symbol",
    "ticker",
    "instrument",
    "instrument_id",
    "symbol_or_asset_id",  # alpaca-py
    "product_id",  # Coinbase
    "pair",  # Kraken
    "asset",
    "security",
    "local_symbol",
    "localsymbol",
)
QUANTITY_FIELDS = (
    "qty",
    "quantity",
    "amount",  # ccxt
    "size",
    "base_size",  # Coinbase
    "shares",
    "units",
    "volume",  # Kraken
    "vol",
    "orderqty",
    "order_qty",
    "totalquantity",  # ib_insync / ibapi
    "total_quantity",
)
NOTIONAL_FIELDS = (
    "notional",
    "quote_size",  # Coinbase
    "quoteorderqty",  # Binance
    "quote_order_qty",
    "cost",  # ccxt create_market_order_with_cost
    "funds",
)
SIDE_FIELDS = ("side", "action", "direction", "type_side")
# Every price an order may carry; it is valued at the highest of them and the market price.
PRICE_FIELDS = (
    "limit_price",
    "price",
    "lmt_price",
    "lmtprice",  # ib_insync
    "stop_price",
    "stopprice",
    "aux_price",
    "auxprice",  # ib_insync stop price
    "trigger_price",
    "triggerprice",
    "stop_limit_price",
    "stop_loss_price",
    "take_profit_price",
    "price2",  # Kraken
    "limit",
)
_CLOSING = re.compile(r"^(close|liquidate|flatten)_?\w*positions?$")
# ib_insync's "unset" price (sys.float_info.max) and SDK defaults of 0 mean "no price".
_UNSET_PRICE = 1e300
CLIENT_ID_FIELDS = (
    "client_order_id",
    "clientorderid",  # ccxt's unified params key
    "newclientorderid",  # Binance
    "clientoid",  # KuCoin
    "client_oid",
    "clordid",  # OKX
    "cl_ord_id",
    "client_id",
    "idempotency_key",
    "order_ref",
    "orderref",
    "client_order_ref",
)
# Decimal and numpy scalars are Numbers; a UUID is a client order id a caller may pass as is.
_SCALARS = (str, bytes, numbers.Number, bool, type(None), Enum, uuid.UUID)
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
    # Why the order cannot be valued (a NaN, infinite, negative, zero or non-numeric quantity,
    # price or notional; no quantity at all; a size hidden in ``*args``), else ``None``.
    problem: str | None = None
    # A call that only closes positions (close_position, close_all_positions): it reduces
    # exposure whatever its size, so it is neither valued nor refused while reducing.
    closing: bool = False


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
        "auxPrice",
        "orderRef",
        "clientOrderId",
        "localSymbol",
    ):
        try:
            item = getattr(value, name)
        except Exception:
            continue
        if not callable(item):
            found[_norm(name)] = item
    return found or None


class _Invalid(ValueError):
    """A field that is present but is not a finite number."""


def _number(value: Any) -> float | None:
    """``None`` when absent; the number; :class:`_Invalid` when present but not finite."""
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        raise _Invalid(f"{value!r} is not a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, ArithmeticError):
        raise _Invalid(f"{_show(value)} is not a number") from None
    if not math.isfinite(number):
        raise _Invalid(f"{_show(value)} is not a finite number")
    return number


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _numeric(value: Any) -> bool:
    """Whether a positional value could be a size or a price (a number or numeric text)."""
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float | Decimal):
        return True
    if isinstance(value, str | bytes):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _side_in_name(method: str) -> int:
    """The side spelled in a method's name (ccxt ``create_market_buy_order``, Coinbase
    ``market_order_sell``, python-binance ``order_limit_buy``), else 0."""
    words = set(method.lower().replace("-", "_").split("_"))
    if "buy" in words:
        return 1
    if "sell" in words:
        return -1
    return 0


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


def _blank(value: Any) -> bool:
    """An id that counts as none: ``None``, ``""`` or only whitespace."""
    return value is None or (isinstance(value, str | bytes) and not value.strip())


def _first_id(data: Mapping[str, Any]) -> Any:
    for name in CLIENT_ID_FIELDS:
        if name in data and not _blank(data[name]):
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
    method: str = "",
    params_key: str | None = None,
) -> OrderCall:
    """Read the order from a call and supply a client order id when the method accepts one and
    the caller gave none (a blank id counts as none). The same :class:`OrderCall` is then used
    for every attempt.

    The call is bound to the method's signature, so quantity, price and side are read from
    keyword, positional and order-object arguments alike; a value the order cannot be valued
    with is reported in ``intent.problem``. ``params_key`` names the client order id field of
    an SDK that takes extra fields in a ``params`` dict (ccxt's ``clientOrderId``).
    """
    arguments: dict[str, Any] = {}
    bound: inspect.BoundArguments | None = None
    hidden = False  # positional values in *args: their meaning is unknown
    if sig is not None:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            bound = None
    if bound is not None and sig is not None:
        for name, value in bound.arguments.items():
            param = sig.parameters[name]
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update({_norm(k): v for k, v in value.items()})
            elif param.kind is inspect.Parameter.VAR_POSITIONAL:
                hidden = hidden or any(_numeric(v) for v in value)
                for item in value:  # order objects passed positionally are still read
                    if not isinstance(item, _SCALARS):
                        arguments.setdefault(f"*{id(item)}", item)
            else:
                arguments[_norm(name)] = value
    else:
        hidden = any(_numeric(v) for v in args)
        arguments.update({_norm(k): v for k, v in kwargs.items()})
    data: dict[str, Any] = {}
    container: tuple[str, str] | None = None  # (argument name, field) of an order object's id
    for name, value in arguments.items():
        inner = _fields_of(value)
        if inner:
            for key, item in inner.items():
                if data.get(key) is None:
                    data[key] = item
            for field in CLIENT_ID_FIELDS:
                if field in inner and container is None and not name.startswith("*"):
                    container = (name, field)
    for name, value in arguments.items():
        if isinstance(value, _SCALARS) or (name in _NUMERIC_FIELDS and _fields_of(value) is None):
            data[name] = value if value is not None else data.get(name)

    client_id = _first_id(data)
    out_args, out_kwargs = tuple(args), dict(kwargs)
    if client_id is None and supply_client_id:
        id_param = _client_id_param(sig)
        if id_param is not None and bound is not None:
            client_id = new_client_order_id()
            out_kwargs[id_param] = client_id
            if id_param in bound.arguments:  # given explicitly as None or blank
                bound.arguments[id_param] = client_id
                out_args, out_kwargs = tuple(bound.args), dict(bound.kwargs)
        elif container is not None and bound is not None:
            arg_name, field = container
            original = next(k for k in bound.arguments if _norm(k) == arg_name)
            attr = _attr_name(bound.arguments[original], field)
            client_id = new_client_order_id()
            bound.arguments[original] = _with_client_id(bound.arguments[original], attr, client_id)
            out_args, out_kwargs = tuple(bound.args), dict(bound.kwargs)
            if _first_id(_fields_of(bound.arguments[original]) or {}) != client_id:
                client_id = None  # the object refused the id: no idempotency key after all
        elif (
            params_key is not None and bound is not None and "params" in bound.signature.parameters
        ):
            given = bound.arguments.get("params")
            client_id = new_client_order_id()
            bound.arguments["params"] = {
                **(given if isinstance(given, Mapping) else {}),
                params_key: client_id,
            }
            out_args, out_kwargs = tuple(bound.args), dict(bound.kwargs)

    intent = _intent(data, hidden, method, client_id)
    if _CLOSING.match(method.lower()):
        intent = replace(intent, problem=None, closing=True)
    return OrderCall(out_args, out_kwargs, intent, client_id is not None)


def _intent(data: Mapping[str, Any], hidden: bool, method: str, client_id: Any) -> OrderIntent:
    """The order described by ``data`` (normalised field names)."""
    problems: list[str] = []

    def number(names: tuple[str, ...], what: str) -> float | None:
        try:
            return _number(_first(data, names))
        except _Invalid as exc:
            problems.append(f"{what} {exc}")
            return None

    quantity = number(QUANTITY_FIELDS, "the quantity")
    notional = number(NOTIONAL_FIELDS, "the notional amount")
    prices: list[float] = []
    for name in PRICE_FIELDS:
        try:
            value = _number(data.get(name))
        except _Invalid as exc:
            problems.append(f"the price {name} {exc}")
            continue
        if value is None or value == 0 or value >= _UNSET_PRICE:
            continue  # absent, or an SDK's "no price" default
        if value < 0:
            problems.append(f"the price {name} = {value!r} is negative")
            continue
        prices.append(value)
    raw_side = _first(data, SIDE_FIELDS)
    side = _side(raw_side) if raw_side is not None else 0
    side = side or _side_in_name(method)
    if quantity is not None:
        if side == 0 and quantity < 0:
            side = -1  # a signed quantity without any side: the sign is the direction
        elif quantity <= 0:
            problems.append(f"the quantity {quantity!r} is not positive")
        quantity = abs(quantity)
        if quantity == 0:
            quantity = None
    if notional is not None and notional <= 0:
        problems.append(f"the notional amount {notional!r} is not positive")
        notional = None
    if hidden:  # a number the broker may take as the size, unseen by the check
        problems.append(
            "a number is in positional *args, where its meaning is unknown; pass sizes and "
            "prices by name"
        )
    elif quantity is None and notional is None and not problems:
        problems.append(
            "no quantity or notional amount was found in the call (looked for "
            + ", ".join(QUANTITY_FIELDS[:4] + NOTIONAL_FIELDS[:2])
            + ")"
        )
    symbol = _first(data, SYMBOL_FIELDS)
    return OrderIntent(
        symbol=str(symbol) if symbol is not None else None,
        quantity=quantity,
        side=side,
        price=max(prices) if prices else None,
        notional=notional,
        client_order_id=str(client_id) if client_id is not None else None,
        problem="; ".join(problems) or None,
    )


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
