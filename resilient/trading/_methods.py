"""Which public methods a proxy wraps, and what kind of call each one is.

A method's kind comes from, in order: the caller's declaration (``kinds=`` or
``services.<name>.methods.<method>.kind``), the vocabulary table of the common broker SDKs
below, then name patterns. A broker method that none of these recognises is *undeclared*: the
proxy guards it like an order for the trading switches until it is declared.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

__all__ = ["SDK_VOCABULARY", "guess_kind", "public_methods", "snake_case"]

_R, _O, _C, _X = "read", "order", "cancel", "other"
_U = ""  # generic request methods (any endpoint, orders included): undeclared

# Exact method names of the common SDKs (snake_case; camelCase names are converted first).
# alpaca-py (TradingClient), ccxt (every exchange), ib_insync / ibapi (IB, EClient), Coinbase
# Advanced Trade (coinbase.rest.RESTClient), Kraken (python-kraken-sdk, krakenex), Binance
# (binance-connector, python-binance) and the IBKR Client Portal API.
SDK_VOCABULARY: dict[str, str] = {
    # alpaca-py
    "submit_order": _O,
    "replace_order_by_id": _O,
    "close_position": _O,
    "close_all_positions": _O,
    "exercise_options_position": _O,
    "cancel_order_by_id": _C,
    "cancel_orders": _C,
    "get_order_by_client_id": _R,
    "get_open_position": _R,
    "get_all_positions": _R,
    "create_watchlist": _X,
    "add_asset_to_watchlist_by_id": _X,
    "delete_watchlist_by_id": _X,
    "remove_asset_from_watchlist_by_id": _X,
    "update_watchlist_by_id": _X,
    "response_wrapper": _X,
    "post": _U,  # raw HTTP verbs of the REST client: any endpoint, orders included
    "put": _U,
    "patch": _U,
    "delete": _U,
    # ccxt: helpers that build or check an order without sending it
    "create_order_request": _X,
    "edit_order_request": _X,
    "edit_contract_order_request": _X,
    "edit_spot_order_request": _X,
    "check_order_arguments": _X,
    "generate_client_order_id": _X,
    "load_markets": _R,
    "fetch": _U,  # ccxt's raw HTTP call
    "fetch2": _U,
    "request": _U,
    "query": _U,
    "query_private": _U,  # krakenex: query_private("AddOrder", ...)
    "query_public": _R,
    "send": _U,
    "call": _U,
    # ccxt / exchanges: moving money is never a read
    "withdraw": _O,
    "transfer": _O,
    # ib_insync / ibapi
    "place_order": _O,
    "cancel_order": _C,
    "req_global_cancel": _C,
    "what_if_order": _R,
    "bracket_order": _X,  # builds three Order objects, places nothing
    "one_cancels_all": _X,
    "connect": _X,
    "disconnect": _X,
    "qualify_contracts": _R,
    "positions": _R,
    "portfolio": _R,
    "open_orders": _R,
    "open_trades": _R,
    "trades": _R,
    "fills": _R,
    "executions": _R,
    "account_values": _R,
    "account_summary": _R,
    "managed_accounts": _R,
    "news_bulletins": _R,
    "news_ticks": _R,
    "pending_tickers": _R,
    "pnl": _R,
    "pnl_single": _R,
    "realtime_bars": _R,
    "calculate_implied_volatility": _R,
    "calculate_option_price": _R,
    "request_fa": _R,
    "replace_fa": _X,  # financial-advisor configuration, no order
    "exercise_options": _O,
    "sleep": _X,  # ib_insync's event-loop helpers
    "run": _X,
    "schedule": _X,
    "loop_until": _X,
    "wait_on_update": _X,
    "wait_until": _X,
    "set_timeout": _X,
    # Coinbase Advanced Trade
    "market_order": _O,
    "market_order_buy": _O,
    "market_order_sell": _O,
    "limit_order_ioc": _O,
    "limit_order_ioc_buy": _O,
    "limit_order_ioc_sell": _O,
    "limit_order_gtc": _O,
    "limit_order_gtc_buy": _O,
    "limit_order_gtc_sell": _O,
    "limit_order_gtd": _O,
    "limit_order_gtd_buy": _O,
    "limit_order_gtd_sell": _O,
    "limit_order_fok": _O,
    "limit_order_fok_buy": _O,
    "limit_order_fok_sell": _O,
    "stop_limit_order_gtc": _O,
    "stop_limit_order_gtc_buy": _O,
    "stop_limit_order_gtc_sell": _O,
    "stop_limit_order_gtd": _O,
    "stop_limit_order_gtd_buy": _O,
    "stop_limit_order_gtd_sell": _O,
    "trigger_bracket_order_gtc": _O,
    "trigger_bracket_order_gtc_buy": _O,
    "trigger_bracket_order_gtc_sell": _O,
    "trigger_bracket_order_gtd": _O,
    "trigger_bracket_order_gtd_buy": _O,
    "trigger_bracket_order_gtd_sell": _O,
    "edit_order": _O,
    "allocate_portfolio": _O,
    "move_portfolio_funds": _O,
    # Kraken
    "add_order": _O,
    "add_order_batch": _O,
    "edit_order_batch": _O,
    "cancel_all_orders_after_x": _C,
    "cancel_order_batch": _C,
    "batch_orders": _O,
    # Binance connectors / python-binance
    "new_order": _O,
    "new_order_test": _R,  # validated by the exchange, never executed
    "create_test_order": _R,
    "new_oco_order": _O,
    "new_oto_order": _O,
    "new_otoco_order": _O,
    "new_margin_order": _O,
    "cancel_and_replace": _O,  # places a new order
    "cancel_open_orders": _C,
    "order_market": _O,
    "order_market_buy": _O,
    "order_market_sell": _O,
    "order_limit": _O,
    "order_limit_buy": _O,
    "order_limit_sell": _O,
    "order_oco_buy": _O,
    "order_oco_sell": _O,
    "create_margin_order": _O,
    "create_oco_order": _O,
    "account": _R,
    "my_trades": _R,
    # IBKR Client Portal
    "place_orders": _O,
    "modify_order": _O,
    "reply": _O,  # confirms a pending order
}

# Order placement by pattern (after the table): ccxt's create_*_order family, edit/modify/
# replace verbs, order-type prefixes (market_order_buy, limit_order_gtc_buy), side verbs,
# exchanges' raw endpoints (private_post_order, sapi_post_margin_order).
_ORDER = re.compile(
    r"^(place|submit|create|send|new|replace|modify|amend|update|edit|add|batch)_?\w*orders?(_|$)"
    r"|^(buy|sell|short|cover|order|place|submit|trade)(_|$)"
    r"|^(market|limit|stop|stop_limit|stop_loss|take_profit|trailing|bracket|oco|oto|otoco|"
    r"trigger|trigger_bracket|twap|iceberg)_orders?(_|$)"
    r"|^(close|liquidate|flatten|exercise)_?\w*positions?(_|$)"
    r"|_(post|put|patch)_\w*orders?(_|$)"
)
_CANCEL = re.compile(r"^cancel|_delete_\w*orders?(_|$)")
_READ = re.compile(
    r"^(get|list|fetch|read|load|query|search|find|lookup|describe|is|has|check|stream|watch|"
    r"retrieve|download|history|latest|current|quote|quotes|bars?|trades?|price|prices|preview|"
    r"account|positions?|snapshot|snapshots|calendar|clock|assets?|orders?|req|"
    r"ticker|tickers|markets?|balance|balances|ohlcv|time|status|ping|server_time)(_|$)"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(name: str) -> str:
    """``AddOrder`` → ``add_order``, ``placeOrder`` → ``place_order``, ``reqGlobalCancel`` →
    ``req_global_cancel``; snake_case names are unchanged (lower-cased)."""
    return _CAMEL.sub("_", name).lower().replace("-", "_")


def guess_kind(name: str, *, default: str | None) -> str | None:
    """``"order"``, ``"cancel"``, ``"read"``, ``"other"`` from the SDK vocabulary or the name's
    pattern; ``default`` when nothing matches."""
    lowered = snake_case(name).removesuffix("_async")  # ib_insync's placeOrderAsync style
    known = SDK_VOCABULARY.get(lowered)
    if known is not None:
        return known or default
    if _CANCEL.search(lowered):
        return "cancel"
    if _ORDER.search(lowered):
        return "order"
    if _READ.search(lowered):
        return "read"
    return default


def public_methods(obj: object) -> dict[str, Callable[..., Any]]:
    """Every public bound method of ``obj`` (names not starting with ``_``)."""
    found: dict[str, Callable[..., Any]] = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            static = inspect.getattr_static(obj, name)
        except AttributeError:
            continue
        if isinstance(static, property | functools.cached_property):
            continue  # properties are state, read through __getattr__ each time
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        if not callable(value) or inspect.isclass(value):
            continue
        # An event object (ib_insync's ``orderStatusEvent``, subscribed to with ``+=``) is
        # state, read from the wrapped object untouched; any other callable object may place
        # an order and is wrapped like a method.
        if not inspect.isroutine(value) and hasattr(type(value), "__iadd__"):
            continue
        found[name] = value
    return found
