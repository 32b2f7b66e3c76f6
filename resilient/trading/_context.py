"""What the proxies of one factory share: configuration, risk checker, paper brokers, prices."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import math
import threading
from collections.abc import Callable, Sequence
from typing import Any

from resilient._core.clock import get_clock
from resilient._core.wrapping import is_async_callable
from resilient.config import Config, current_config
from resilient.trading._freshness import TimedPrice, stamp  # stale-price guard
from resilient.trading._methods import public_methods
from resilient.trading._risk import RiskChecker
from resilient.trading._state import TradingState
from resilient.trading._steps import Steps, arun, run
from resilient.trading._throttle import OrderThrottle
from resilient.trading._unknown import UnknownOrders
from resilient.trading._values import PRICE_METHODS, last_fallback

__all__ = ["TradingContext"]


class TradingContext:
    """Shared state of the proxies created by one factory."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.risk = RiskChecker(config.trading, config.features)
        self.state = TradingState(config)
        # Whether ``config`` is the process configuration (whose reloads the decorators follow).
        self.follows_process_config = config is current_config()
        self._lock = threading.Lock()
        self._paper: dict[str | None, Any] = {}
        self._paper_methods: dict[tuple[str | None, str], Callable[..., Any]] = {}
        self._prices: dict[str, tuple[float, float]] = {}  # symbol -> (price, monotonic time)
        self.market_data: list[Any] = []  # ResilientService proxies of market data
        self._throttles: dict[str, OrderThrottle] = {}
        self.unknown = UnknownOrders()  # orders of unknown outcome, until reconciled

    def throttle(self, service: str) -> OrderThrottle | None:
        """The order-rate throttle of ``service`` under ``trading.max_order_rate`` (rebuilt
        when a reload changes the rate), or ``None`` when there is none."""
        spec = self.config.trading.max_order_rate
        if not spec:
            return None
        found = self._throttles.get(service)
        if found is None or found.spec != spec:
            redis = self.config.redis
            found = OrderThrottle(
                service,
                spec,
                redis_url=redis.url,
                key_prefix=redis.key_prefix,
                timeout=redis.timeout,
            )
            self._throttles[service] = found
        return found

    def update_config(self, config: Config) -> None:
        """Apply a reloaded configuration (switches and limits take effect at once)."""
        self.config = config
        self.risk = RiskChecker(config.trading, config.features)
        self.state.update_config(config)
        self.follows_process_config = config is current_config()

    # -- paper brokers ----------------------------------------------------------------------

    def register_paper_broker(self, broker: Any, service: str | None = None) -> None:
        """Route orders of ``service`` (every service when ``None``) to ``broker`` while live
        trading is off and paper trading is on."""
        with self._lock:
            self._paper[service] = broker
            for key in [k for k in self._paper_methods if k[0] == service]:
                del self._paper_methods[key]

    def paper_broker(self, service: str) -> Any:
        """The paper broker registered for ``service`` (or for every service), or ``None``."""
        with self._lock:
            return self._paper.get(service, self._paper.get(None))

    def paper_method(
        self, service: str, method: str, asynchronous: bool
    ) -> Callable[..., Any] | None:
        """The paper broker's ``method`` adapted to the caller's sync/async style, or ``None``."""
        key = service if service in self._paper else None
        cached = self._paper_methods.get((key, method + ("#a" if asynchronous else "#s")))
        if cached is not None:
            return cached
        broker = self.paper_broker(service)
        if broker is None:
            return None
        fn = public_methods(broker).get(method)
        if fn is None:
            return None
        adapted = _adapt(fn, asynchronous)
        with self._lock:
            self._paper_methods[(key, method + ("#a" if asynchronous else "#s"))] = adapted
        return adapted

    # -- prices -----------------------------------------------------------------------------

    def remember_price(self, symbol: str, price: float) -> None:
        """Keep the last good price of ``symbol`` (used to value market orders), with the time
        it was observed: a :class:`TimedPrice` keeps its own, an older one never replaces a
        younger one (stale-price guard)."""
        at = price.at if isinstance(price, TimedPrice) else get_clock().monotonic()
        held = self._prices.get(symbol)
        if held is None or at >= held[1]:
            self._prices[symbol] = (price, at)

    def _remembered(self, symbol: str) -> TimedPrice | None:
        held = self._prices.get(symbol)
        if held is None:
            return None
        return held[0] if isinstance(held[0], TimedPrice) else TimedPrice(held[0], at=held[1])

    def last_price(self, symbol: str) -> tuple[float, float] | None:
        """``(price, age in seconds)`` of the last good price seen, or ``None``."""
        entry = self._prices.get(symbol)
        if entry is None:
            return None
        return entry[0], max(0.0, get_clock().monotonic() - entry[1])

    def _price_readers(self, extra: Sequence[Callable[..., Any]]) -> list[Callable[..., Any]]:
        """The market-data services' live price readers (never their cached fallback), then
        ``extra``."""
        readers: list[Callable[..., Any]] = []
        for proxy in self.market_data:
            live = getattr(type(proxy), "live_method", None)
            for name in PRICE_METHODS:
                fn = live(proxy, name) if live is not None else getattr(proxy, name, None)
                if callable(fn):
                    readers.append(fn)
                    break
        readers.extend(extra)
        return readers

    def risk_price(self, symbol: str, value: Any, before: Any = None) -> float | None:
        """Whether a price answer may value an order in a risk check, and the price if so.

        The one place every price used by a risk check passes through: a cached fallback
        (a :class:`StalePrice`, or anything marked ``stale``) is never used.
        """
        if getattr(value, "stale", False):
            return None
        price = stamp(value, before)  # with the time it was observed (stale-price guard)
        if price is None or not math.isfinite(price):
            return None
        self.remember_price(symbol, price)
        return price

    def price_steps(
        self, symbol: str, extra: Sequence[Callable[..., Any]], asynchronous: bool
    ) -> Steps[float | None]:
        """The current price of ``symbol`` for a risk check: from the market-data services'
        live readers (then ``extra`` readers; for a synchronous caller only the synchronous
        ones), else the freshest live price remembered (a stream's included), with the time
        it was observed (stale-price guard)."""
        for reader in self._price_readers(extra):
            if not asynchronous and is_async_callable(reader):
                continue
            before = last_fallback()
            try:
                value = yield functools.partial(reader, symbol)
            except Exception:
                continue
            price = self.risk_price(symbol, value, before)
            if price is not None:
                return price
        return self._remembered(symbol)

    async def aprice(
        self, symbol: str, *, extra: Sequence[Callable[..., Any]] = ()
    ) -> float | None:
        """:meth:`price_steps` for an asynchronous caller."""
        return await arun(self.price_steps(symbol, extra, True))

    def price_sync(self, symbol: str, *, extra: Sequence[Callable[..., Any]] = ()) -> float | None:
        """:meth:`price_steps` for a synchronous caller (only synchronous readers are asked)."""
        return run(self.price_steps(symbol, extra, False))


def _adapt(fn: Callable[..., Any], asynchronous: bool) -> Callable[..., Any]:
    if is_async_callable(fn) == asynchronous:
        return fn
    if asynchronous:  # a sync paper broker behind an async proxy

        async def acall(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return acall

    def call(*args: Any, **kwargs: Any) -> Any:
        # An async paper broker behind a synchronous client: run it on an event loop of its
        # own (in a helper thread when this thread already runs one).
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(fn(*args, **kwargs))
        with concurrent.futures.ThreadPoolExecutor(1, "resilient-paper") as pool:
            return pool.submit(lambda: asyncio.run(fn(*args, **kwargs))).result()

    return call
