"""Resilient proxies for broker and market-data clients.

A proxy wraps every public method of the wrapped object once, at construction, keeping its
name, signature and docstring, and choosing the policy by the kind of call:

* reads (account, positions, prices, bars, quotes): rate limit, timeout, the service's breaker,
  retries on transient errors, and the last good answer from the cache when all of that fails;
* orders (place/submit/replace): trading switches and risk checks first (once per order, outside
  every retry), a client order id supplied when the method accepts one, then rate limit,
  ``trading.default_order_timeout`` and the breaker; retried only with an idempotency key or
  after a failure that proves the request never left;
* cancels: like reads but without a cached answer (cancelling twice cannot duplicate an order);
* anything else: rate limit, timeout and breaker, no retry.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _hooks
from .._cache import cache_key, get_fallback_cache
from .._classify import ErrorCategory, classify, is_transient
from .._clock import get_clock
from .._exceptions import RiskLimitError, TradingDisabledError
from .._hedge import hedged
from .._sanitize import sanitize
from ._methods import guess_kind, is_async, public_methods
from ._orders import OrderCall, OrderIntent, prepare_order_call
from ._ratelimit import RateLimitExceeded, ServiceRateLimiter, limiter_for
from ._risk import PositionBook, RiskChecker
from ._settings import MethodPolicy, ServiceSettings
from ._values import (
    PRICE_METHODS,
    FallbackInfo,
    last_fallback,
    mark_stale,
    price_of,
    set_last_fallback,
)

if TYPE_CHECKING:
    from ._context import TradingContext

__all__ = ["ResilientService"]

_NO_CACHE_CATEGORIES = frozenset(
    {ErrorCategory.VALIDATION, ErrorCategory.AUTHENTICATION, ErrorCategory.RISK_LIMIT}
)
_POSITION_METHODS = ("get_position", "get_open_position")
_LOOKUP_METHODS = (
    "get_order_by_client_id",
    "get_order_by_client_order_id",
    "get_order_by_client_ref",
)

# Per order call: whether it carries an idempotency key (read by the retry predicate) and how
# many attempts reached the broker.
_order_state: contextvars.ContextVar[_OrderState | None] = contextvars.ContextVar(
    "resilient_order_state", default=None
)


class _OrderState:
    __slots__ = ("attempts", "has_key")

    def __init__(self, has_key: bool) -> None:
        self.has_key = has_key
        self.attempts = 0


# When the current proxied call started: a cached answer reports how long its caller waited.
_call_started: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "resilient_proxy_call_started", default=None
)


def _priority_bulkhead(call: Callable[..., Any], svc: ServiceSettings, kind: str) -> Any:
    """[load] The service's bulkhead around one method, at the priority of its kind."""
    from .._bulkhead import get_bulkhead

    return get_bulkhead(
        svc.name,
        max_concurrent=svc.bulkhead,
        max_queue=svc.bulkhead_max_queue,
        queue_timeout=svc.bulkhead_queue_timeout,
    ).decorate(call, kind)


def _priority_bulkhead_data(name: str) -> dict[str, Any]:
    """[load] The service bulkhead's snapshot for its health component."""
    from .._bulkhead import bulkheads

    return bulkheads.get(name).snapshot().to_dict() if name in bulkheads else {}


def _order_is_idempotent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    state = _order_state.get()
    return state is not None and state.has_key


def _retryable(exc: BaseException) -> bool:
    # The client-side limiter has already waited as long as allowed: retrying cannot help.
    return not isinstance(exc, RateLimitExceeded) and is_transient(exc)


def _quantity_of(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    for name in ("qty", "quantity", "position", "size"):
        item = value.get(name) if isinstance(value, Mapping) else getattr(value, name, None)
        if item is not None:
            try:
                return float(item)
            except (TypeError, ValueError):
                return None
    return None


def _public_name(cls: type) -> str:
    """The name of the first public class of ``cls``'s hierarchy (not a private subclass)."""
    return next((c.__name__ for c in cls.__mro__ if not c.__name__.startswith("_")), cls.__name__)


def _symbol_arg(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
    value = kwargs.get("symbol", args[0] if args else None)
    return value if isinstance(value, str) else None


class _ServiceState:
    """Counters and last events of one service, for its health component."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fallbacks_served = 0
        self.degraded = False  # the latest read of some method served a fallback
        self.last_fallback: FallbackInfo | None = None
        self.last_fallback_at: float | None = None
        self.orders_sent = 0
        self.orders_refused = 0


class ResilientService:
    """A proxy that gives every public method of ``target`` the resilience of service ``name``.

    Built by :meth:`resilient.integration.ResilienceFactory.create_resilient_broker` and
    :meth:`~resilient.integration.ResilienceFactory.create_resilient_market_data`. Attributes
    that are not methods are read from the wrapped object.
    """

    def __init__(
        self,
        target: Any,
        name: str,
        *,
        role: str,
        settings: ServiceSettings,
        context: TradingContext,
        paper: bool | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a resilient service needs a non-empty name, e.g. 'main_broker'")
        object.__setattr__(self, "_target", target)
        self.__dict__.update(
            _name=name,
            _role=role,
            _settings=settings,
            _context=context,
            _state=_ServiceState(),
            _book=PositionBook(),
            _methods={},
            _kinds={},
        )
        if paper is None:
            paper = settings.paper
        if paper is None:
            # Only a literal True counts: a method or a string named "paper" is no proof.
            paper = (
                getattr(target, "paper", None) is True or getattr(target, "is_paper", None) is True
            )
        self.__dict__["_is_paper"] = paper
        # [load] weighted, linked limits with the venue's feedback (services.<name>.methods.*)
        self.__dict__["_limiter"] = limiter_for(name, settings, context.config.redis)
        default_kind = "read" if role == "market_data" else "other"
        for method_name, bound in public_methods(target).items():
            policy = settings.for_method(method_name)
            kind = policy.kind or guess_kind(method_name, default=default_kind)
            self._kinds[method_name] = kind
            wrapped = self._timed(self._wrap(method_name, bound, kind, policy), bound)
            self._methods[method_name] = wrapped
            self.__dict__[method_name] = wrapped
        # The proxy's own price and position readers, asked when an order is risk-checked.
        own_prices = tuple(self._methods[n] for n in PRICE_METHODS if n in self._methods)
        self.__dict__.update(
            _own_prices=own_prices,
            _own_prices_sync=tuple(fn for fn in own_prices if not is_async(fn)),
            _own_positions=tuple(self._methods[n] for n in _POSITION_METHODS if n in self._methods),
        )

    # -- attribute access -------------------------------------------------------------------

    def __getattr__(self, item: str) -> Any:
        return getattr(self.__dict__["_target"], item)

    def __setattr__(self, name: str, value: Any) -> None:
        # State belongs to the wrapped client (``proxy.timeout = 5`` sets the SDK's attribute).
        setattr(self.__dict__["_target"], name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(type(self))) | set(self._methods) | set(dir(self._target)))

    def __repr__(self) -> str:
        return f"<resilient {self._role} {self._name!r} wrapping {type(self._target).__name__}>"

    @property
    def service_name(self) -> str:
        """The service (and breaker, and health component) name."""
        name: str = self._name
        return name

    @property
    def wrapped(self) -> Any:
        """The wrapped client."""
        return self._target

    @property
    def method_kinds(self) -> dict[str, str]:
        """Each wrapped method and its kind (``read``, ``order``, ``cancel``, ``other``)."""
        return dict(self._kinds)

    @property
    def tracked_positions(self) -> dict[str, float]:
        """Net quantities of the orders sent through this proxy."""
        book: PositionBook = self._book
        return book.snapshot()

    # -- wrapping ---------------------------------------------------------------------------

    def _timed(self, call: Callable[..., Any], fn: Callable[..., Any]) -> Callable[..., Any]:
        """Record each call's outcome and latency for the component's rolling success metrics
        (availability, error rate, p95 of calls). A cached answer is recorded, with the time
        the caller waited for it, by the fallback event :meth:`_serve` emits. An order refused
        by a risk rule is a decision, not a failure, and is not counted."""
        from ..health._stats import stats

        record = stats(self._name)
        clock = get_clock

        def done(start: float, before: FallbackInfo | None) -> None:
            if last_fallback() is before:
                record.record(True, clock().monotonic() - start)

        if is_async(fn):

            @functools.wraps(call)
            async def atimed(*args: Any, **kwargs: Any) -> Any:
                start, before = clock().monotonic(), last_fallback()
                token = _call_started.set(start)
                try:
                    result = await call(*args, **kwargs)
                except RiskLimitError:
                    raise
                except Exception:
                    record.record(False, clock().monotonic() - start)
                    raise
                finally:
                    _call_started.reset(token)
                done(start, before)
                return result

            return atimed

        @functools.wraps(call)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start, before = clock().monotonic(), last_fallback()
            token = _call_started.set(start)
            try:
                result = call(*args, **kwargs)
            except RiskLimitError:
                raise
            except Exception:
                record.record(False, clock().monotonic() - start)
                raise
            finally:
                _call_started.reset(token)
            done(start, before)
            return result

        return timed

    def _wrap(
        self, method: str, fn: Callable[..., Any], kind: str, policy: MethodPolicy
    ) -> Callable[..., Any]:
        asynchronous = is_async(fn)
        if kind == "order":
            return self._wrap_order(method, fn, policy, asynchronous)
        call = self._pipeline(method, fn, kind, policy, asynchronous)
        if kind == "cancel" and self._role == "broker":
            return self._routed(method, fn, call, asynchronous)
        if kind != "read" or not self._settings.resilience_enabled:
            return call
        return self._with_cache(method, fn, call, policy, asynchronous)

    def _pipeline(
        self,
        method: str,
        fn: Callable[..., Any],
        kind: str,
        policy: MethodPolicy,
        asynchronous: bool,
    ) -> Callable[..., Any]:
        """retry(rate limit(breaker(timeout(fn)))) for one method of the wrapped object."""
        if not self._settings.resilience_enabled:
            return fn  # canary switch off: the plain client
        import resilient

        name = self._name
        seconds = policy.order_timeout if kind in ("order", "cancel") else policy.timeout
        call: Callable[..., Any] = resilient.timeout(seconds, name=f"{name}.{method}")(fn)
        # One breaker per service: only service-level overrides apply to it. With the process
        # configuration, unset values are left to the decorators so they follow reloads; a
        # factory given another configuration pins every value from that configuration.
        service = self._settings.policy
        follow = self._context.follows_process_config
        breaker_options: dict[str, Any] = {
            key: getattr(service, key)
            for key in ("failure_threshold", "reset_timeout")
            if key in service.explicit or not follow
        }
        if not follow:
            res = self._context.config.resilience
            breaker_options["half_open_max_calls"] = res.circuit_breaker_half_open_max_calls
            breaker_options["success_threshold"] = res.circuit_breaker_success_threshold
        call = resilient.breaker(name, **breaker_options)(call)
        if self._settings.bulkhead:  # [load] priority bulkhead: cancel > order > other > read
            call = _priority_bulkhead(call, self._settings, kind)
        limiter: ServiceRateLimiter | None = self._limiter
        counted = kind == "order"
        if limiter is not None:  # [load] 429/418 and usage headers feed the limiter
            call = limiter.watch(call, asynchronous, self._target)
        if limiter is not None or counted:
            call = self._limited(call, limiter, counted, asynchronous, policy.weight, method)
        if policy.hedge_after:  # [load] hedged reads; any other kind is refused here
            call = hedged(call, f"{name}.{method}", kind, policy.hedge_after)
        if kind == "other":
            return functools.wraps(fn)(call)
        options: dict[str, Any] = {
            key: getattr(policy, key)
            for key in ("max_attempts", "initial_delay", "max_delay")
            if key in policy.explicit or not follow
        }
        options["name"] = f"{name}.{method}"
        options["retry_on"] = _retryable
        if kind == "order":
            options["idempotent"] = _order_is_idempotent
        call = resilient.retry(**options)(call)
        return functools.wraps(fn)(call)

    @staticmethod
    def _limited(
        call: Callable[..., Any],
        limiter: ServiceRateLimiter | None,
        counted: bool,
        asynchronous: bool,
        weight: int = 1,  # [load] the method's cost and its own linked limit
        method: str | None = None,
    ) -> Callable[..., Any]:
        if asynchronous:

            async def alimited(*args: Any, **kwargs: Any) -> Any:
                if limiter is not None:
                    await limiter.acquire(weight, method)
                if counted:
                    state = _order_state.get()
                    if state is not None:
                        state.attempts += 1
                return await call(*args, **kwargs)

            return alimited

        def limited(*args: Any, **kwargs: Any) -> Any:
            if limiter is not None:
                limiter.acquire_sync(weight, method)
            if counted:
                state = _order_state.get()
                if state is not None:
                    state.attempts += 1
            return call(*args, **kwargs)

        return limited

    # -- reads: cached fallback -------------------------------------------------------------

    def _remember_price(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Keep the price a price or quote read answered (called only for those methods)."""
        symbol = _symbol_arg(args, kwargs)
        price = price_of(value) if symbol else None
        if symbol and price is not None:
            self._context.remember_price(symbol, price)

    def _serve(self, method: str, exc: Exception, entry: Any) -> Any:
        age = float(entry.age)
        state: _ServiceState = self._state
        info = FallbackInfo(self._name, method, age, _public_name(type(exc)))
        with state.lock:
            first = not state.degraded
            state.degraded = True
            state.fallbacks_served += 1
            state.last_fallback = info
            state.last_fallback_at = get_clock().time()
        set_last_fallback(info)
        started = _call_started.get()
        _hooks.event(
            _hooks.EventKind.FALLBACK_SERVED,
            self._name,
            exc,
            source="cache",
            cache_age=age,
            first_in_episode=first,
            elapsed=0.0 if started is None else get_clock().monotonic() - started,
        )
        return mark_stale(entry.value, age, self._name)

    def _recovered(self) -> None:
        state: _ServiceState = self._state
        if state.degraded:
            with state.lock:
                was, state.degraded = state.degraded, False
            if was:
                _hooks.event(_hooks.EventKind.FALLBACK_RECOVERED, self._name)

    def _with_cache(
        self,
        method: str,
        fn: Callable[..., Any],
        call: Callable[..., Any],
        policy: MethodPolicy,
        asynchronous: bool,
    ) -> Callable[..., Any]:
        ttl = policy.cache_ttl
        prefix = f"{self._name}.{method}"
        prices = "price" in method or "quote" in method

        def usable(exc: Exception) -> bool:
            return classify(exc) not in _NO_CACHE_CATEGORIES

        if asynchronous:

            @functools.wraps(fn)
            async def aread(*args: Any, **kwargs: Any) -> Any:
                key = cache_key(prefix, args, kwargs)
                try:
                    value = await call(*args, **kwargs)
                except Exception as exc:
                    if not usable(exc):
                        raise
                    entry = await get_fallback_cache().get(key)
                    if entry is None or entry.age > ttl:
                        raise
                    return self._serve(method, exc, entry)
                await get_fallback_cache().set(key, value, ttl)
                if prices:
                    self._remember_price(args, kwargs, value)
                self._recovered()
                return value

            return aread

        @functools.wraps(fn)
        def read(*args: Any, **kwargs: Any) -> Any:
            key = cache_key(prefix, args, kwargs)
            try:
                value = call(*args, **kwargs)
            except Exception as exc:
                if not usable(exc):
                    raise
                entry = get_fallback_cache().get_sync(key)
                if entry is None or entry.age > ttl:
                    raise
                return self._serve(method, exc, entry)
            get_fallback_cache().set_sync(key, value, ttl)
            if prices:
                self._remember_price(args, kwargs, value)
            self._recovered()
            return value

        return read

    # -- orders -----------------------------------------------------------------------------

    def _mode(self) -> str:
        """``live``, ``paper`` or ``disabled``: where orders of this service go now."""
        features = self._context.config.features
        if not (features.live_trading_enabled or features.paper_trading_enabled):
            return "disabled"
        if self._is_paper:
            return "paper"
        return "live" if features.live_trading_enabled else "paper"

    def _order_target(self, method: str, asynchronous: bool) -> Callable[..., Any]:
        """The function an order method must call now, per the trading switches.

        Raises:
            TradingDisabledError: live trading is off and no paper broker can take the order.
        """
        features = self._context.config.features
        name = self._name
        trading_on = features.live_trading_enabled or features.paper_trading_enabled
        if trading_on and (self._is_paper or features.live_trading_enabled):
            return self._methods_raw[method]
        if not features.paper_trading_enabled:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"order refused: live trading is disabled for {name!r} "
                    "(features.live_trading_enabled = false) and paper trading is off; set "
                    "AI_TRADER_FEATURES__PAPER_TRADING_ENABLED=true and register a paper broker, "
                    "or enable live trading"
                ),
            )
        context: TradingContext = self._context
        paper = context.paper_method(name, method, asynchronous)
        if paper is None and context.paper_broker(name) is not None:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"order refused: live trading is disabled for {name!r} and the paper broker "
                    f"registered for it has no {method}() method; add one to it or register a "
                    "paper broker that has it"
                ),
            )
        if paper is None:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"order refused: live trading is disabled for {name!r} "
                    "(features.live_trading_enabled = false) and no paper broker is registered; "
                    f"register one with factory.register_paper_broker(PaperBroker(), {name!r}) "
                    "(or wrap a paper client: create_resilient_broker(client, name, paper=True))"
                ),
            )
        return paper

    @property
    def _methods_raw(self) -> dict[str, Callable[..., Any]]:
        raw: dict[str, Callable[..., Any]] = self.__dict__["_pipelines"]
        return raw

    def _routed(
        self, method: str, fn: Callable[..., Any], call: Callable[..., Any], asynchronous: bool
    ) -> Callable[..., Any]:
        """Cancels follow orders: to the paper broker while trading on paper."""
        self.__dict__.setdefault("_pipelines", {})[method] = call
        if asynchronous:

            @functools.wraps(fn)
            async def acancel(*args: Any, **kwargs: Any) -> Any:
                return await self._order_target(method, True)(*args, **kwargs)

            return acancel

        @functools.wraps(fn)
        def cancel(*args: Any, **kwargs: Any) -> Any:
            return self._order_target(method, False)(*args, **kwargs)

        return cancel

    def _wrap_order(
        self, method: str, fn: Callable[..., Any], policy: MethodPolicy, asynchronous: bool
    ) -> Callable[..., Any]:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        pipeline = self._pipeline(method, fn, "order", policy, asynchronous)
        self.__dict__.setdefault("_pipelines", {})[method] = pipeline
        own_lookup = next(
            (
                getattr(self._target, n)
                for n in _LOOKUP_METHODS
                if callable(getattr(self._target, n, None))
            ),
            None,
        )

        def lookup_for(target: Callable[..., Any]) -> Callable[..., Any] | None:
            """Look orders up where they were sent: the paper broker while paper trading."""
            if target is self._methods_raw.get(method):
                return own_lookup
            context: TradingContext = self._context
            for name in _LOOKUP_METHODS:
                found = context.paper_method(self._name, name, asynchronous)
                if found is not None:
                    return found
            return None

        if asynchronous:

            @functools.wraps(fn)
            async def aorder(*args: Any, **kwargs: Any) -> Any:
                target = self._order_target(method, True)
                prepared = prepare_order_call(sig, args, kwargs)
                await self._acheck(prepared.intent)
                state = _OrderState(prepared.has_idempotency_key)
                token = _order_state.set(state)
                try:
                    result = await target(*prepared.args, **prepared.kwargs)
                except Exception as exc:
                    found = await self._afind(lookup_for(target), prepared, state, exc)
                    if found is None:
                        raise
                    result = found
                finally:
                    _order_state.reset(token)
                self._sent(prepared.intent)
                return result

            return aorder

        @functools.wraps(fn)
        def order(*args: Any, **kwargs: Any) -> Any:
            target = self._order_target(method, False)
            prepared = prepare_order_call(sig, args, kwargs)
            self._check_sync(prepared.intent)
            state = _OrderState(prepared.has_idempotency_key)
            token = _order_state.set(state)
            try:
                result = target(*prepared.args, **prepared.kwargs)
            except Exception as exc:
                found = self._find_sync(lookup_for(target), prepared, state, exc)
                if found is None:
                    raise
                result = found
            finally:
                _order_state.reset(token)
            self._sent(prepared.intent)
            return result

        return order

    def _sent(self, intent: OrderIntent) -> None:
        self._book.apply(intent)
        with self._state.lock:
            self._state.orders_sent += 1

    def _refused(self, exc: RiskLimitError) -> None:
        with self._state.lock:
            self._state.orders_refused += 1
        try:
            from ..errors import record_error

            record_error(exc, component=self._name)
        except Exception:
            pass

    def _lookup_wanted(self, prepared: OrderCall, state: _OrderState, exc: Exception) -> bool:
        """After a retried order failed, the broker may already hold it (its first attempt's
        answer was lost and the retry was rejected as a duplicate)."""
        return (
            prepared.has_idempotency_key
            and state.attempts > 1
            and not isinstance(exc, RiskLimitError)
            and not is_transient(exc)
        )

    async def _afind(
        self,
        lookup: Callable[..., Any] | None,
        prepared: OrderCall,
        state: _OrderState,
        exc: Exception,
    ) -> Any:
        if lookup is None or not self._lookup_wanted(prepared, state, exc):
            return None
        try:
            found = lookup(prepared.intent.client_order_id)
            if isinstance(found, Awaitable):
                found = await found
        except Exception:
            return None
        return found

    def _find_sync(
        self,
        lookup: Callable[..., Any] | None,
        prepared: OrderCall,
        state: _OrderState,
        exc: Exception,
    ) -> Any:
        if lookup is None or is_async(lookup) or not self._lookup_wanted(prepared, state, exc):
            return None
        try:
            found = lookup(prepared.intent.client_order_id)
        except Exception:
            return None
        return found

    def _position_readers(self, asynchronous: bool) -> Sequence[Callable[..., Any]]:
        """Where the current position comes from: the broker that takes the orders now."""
        if not self._is_paper and self._mode() == "paper":
            context: TradingContext = self._context
            readers = [context.paper_method(self._name, n, asynchronous) for n in _POSITION_METHODS]
            return [r for r in readers if r is not None]
        own: tuple[Callable[..., Any], ...] = self._own_positions
        return own

    async def _aposition(self, symbol: str) -> float:
        for reader in self._position_readers(True):
            try:
                value = reader(symbol)
                if isinstance(value, Awaitable):
                    value = await value
            except Exception:
                break
            qty = _quantity_of(value)
            if qty is not None:
                return qty
        # The broker cannot tell: count the orders sent through this proxy.
        book: PositionBook = self._book
        return book.get(symbol)

    def _position_sync(self, symbol: str) -> float:
        for reader in self._position_readers(False):
            if is_async(reader):
                continue
            try:
                qty = _quantity_of(reader(symbol))
            except Exception:
                break
            if qty is not None:
                return qty
        book: PositionBook = self._book
        return book.get(symbol)

    async def _aprice(self, symbol: str) -> float | None:
        context: TradingContext = self._context
        return await context.aprice(symbol, extra=self._own_prices)

    async def _acheck(self, intent: OrderIntent) -> None:
        risk: RiskChecker = self._context.risk
        if not risk.enabled:
            return
        price = None
        if intent.symbol is not None and (intent.price is None or intent.price <= 0):
            price = await self._aprice(intent.symbol)
        position = await self._aposition(intent.symbol) if intent.symbol else 0.0
        self._risk_check(risk, intent, price, position)

    def _check_sync(self, intent: OrderIntent) -> None:
        risk: RiskChecker = self._context.risk
        if not risk.enabled:
            return
        price = None
        if intent.symbol is not None and (intent.price is None or intent.price <= 0):
            price = self._context.price_sync(intent.symbol, extra=self._own_prices_sync)
        position = self._position_sync(intent.symbol) if intent.symbol else 0.0
        self._risk_check(risk, intent, price, position)

    def _risk_check(
        self, risk: RiskChecker, intent: OrderIntent, price: float | None, position: float
    ) -> None:
        """Apply the risk rules to one order, counting and recording a refusal."""
        try:
            risk.check(intent, market_price=price, position=position)
        except RiskLimitError as exc:
            self._refused(exc)
            raise

    # -- health -----------------------------------------------------------------------------

    def _breaker_snapshot(self) -> Any:
        try:
            import resilient

            return resilient.breakers.get(self._name).snapshot()
        except Exception:
            return None

    async def _health(self) -> dict[str, Any]:
        """The service's health component: breaker state, fallbacks served (with the age of
        the last one), orders, rate-limit usage."""
        snap = self._breaker_snapshot()
        state = str(getattr(snap, "state", "closed")) if snap is not None else "closed"
        data: dict[str, Any] = {
            "kind": self._role,
            "resilience_enabled": self._settings.resilience_enabled,
            "circuit_state": state,
        }
        if snap is not None:
            data.update(
                total_calls=snap.total_calls,
                failure_count=snap.failure_count,
                success_rate=snap.success_rate,
                rejected_calls=snap.rejected_calls,
            )
        st: _ServiceState = self._state
        data["fallbacks_served"] = st.fallbacks_served
        if st.last_fallback is not None:
            data["last_fallback"] = {
                "method": st.last_fallback.method,
                "age_seconds": round(st.last_fallback.age, 3),
                "served_at": st.last_fallback_at,
                "error_type": st.last_fallback.error_type,
            }
        if self._role == "broker":
            data.update(
                trading_mode=self._mode(),
                orders_sent=st.orders_sent,
                orders_refused=st.orders_refused,
            )
        limiter: ServiceRateLimiter | None = self._limiter
        if limiter is not None:
            data["api_usage"] = await limiter.usage()
        if self._settings.bulkhead:  # [load] the bulkhead's limits, queue and refusals
            data["bulkhead"] = _priority_bulkhead_data(self._name)
        status, detail = "healthy", ""
        if state == "open":
            status = "unhealthy"
            retry_after = float(getattr(snap, "retry_after", 0.0) or 0.0)
            detail = f"circuit open; next trial in {retry_after:.1f}s"
            if st.fallbacks_served:
                detail += f"; serving cached data ({st.fallbacks_served} served)"
        elif state == "half-open":
            status, detail = "degraded", "circuit half-open; trial calls in progress"
        elif st.degraded and st.last_fallback is not None:
            status = "degraded"
            detail = (
                f"serving cached data: last answer of {st.last_fallback.method} was "
                f"{st.last_fallback.age:.1f}s old"
            )
        elif limiter is not None and limiter.degraded:
            status, detail = "degraded", "rate limit counting in memory (Redis unreachable)"
        data["detail"] = sanitize(detail)
        data["status"] = status
        return data

    async def _aclose(self) -> None:
        """Release the rate limiter's connections."""
        limiter: ServiceRateLimiter | None = self._limiter
        if limiter is not None:
            await limiter.aclose()
