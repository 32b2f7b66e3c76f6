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

import contextlib
import contextvars
import functools
import inspect
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from resilient import metrics
from resilient._core.classify import (
    ErrorCategory,
    classify,
    duplicate_order,
    http_status,
    is_transient,
    proves_not_sent,
)
from resilient._core.clock import get_clock
from resilient._core.exceptions import CircuitOpenError, RiskLimitError, TradingDisabledError
from resilient._core.sanitize import sanitize
from resilient._core.wrapping import is_async_callable
from resilient._instrument.stats import stats
from resilient._policies.breaker import breaker, breakers
from resilient._policies.bulkhead import bulkheads, get_bulkhead
from resilient._policies.fallback import fallback, fallback_status
from resilient._policies.hedge import hedged
from resilient._policies.retry import retry
from resilient._policies.timeout import timeout
from resilient.errors import record_error
from resilient.trading._freshness import with_max_age  # stale-price guard: max_age= on reads
from resilient.trading._methods import guess_kind, public_methods
from resilient.trading._orders import OrderCall, OrderIntent, prepare_order_call
from resilient.trading._ratelimit import RateLimitExceeded, ServiceRateLimiter, limiter_for
from resilient.trading._risk import PositionBook, RiskChecker, check_trading_state
from resilient.trading._sdk import (
    ccxt_id_key,
    ccxt_lookup,
    disable_hidden_retries,
    is_ccxt,
    is_order,
    no_position,
    quantity_of,
    with_symbol,
)
from resilient.trading._settings import METHOD_KINDS, MethodPolicy, ServiceSettings, parse_exclude
from resilient.trading._steps import Steps, arun, run
from resilient.trading._unknown import OrderStatusUnknown, UnknownOrder
from resilient.trading._values import (
    PRICE_METHODS,
    FallbackInfo,
    last_fallback,
    mark_stale,
    price_of,
    set_last_fallback,
)

if TYPE_CHECKING:
    from resilient.trading._context import TradingContext

__all__ = ["ResilientService"]

# Answers, not outages: never replaced by a cached value (a 404 "no position" included).
_NO_CACHE_CATEGORIES = frozenset(
    {
        ErrorCategory.VALIDATION,
        ErrorCategory.AUTHENTICATION,
        ErrorCategory.RISK_LIMIT,
        ErrorCategory.BROKER_REJECTION,
    }
)
_POSITION_METHODS = ("get_position", "get_open_position")
_OPEN_ORDER_METHODS = ("fetch_open_orders", "get_open_orders", "open_orders", "get_orders")
_LOOKUP_METHODS = (
    "get_order_by_client_id",
    "get_order_by_client_order_id",
    "get_order_by_client_ref",
)

# Per order call: whether it carries an idempotency key (read by the retry predicate) and
# whether an attempt failed after the order may have been executed.
_order_state: contextvars.ContextVar[_OrderState | None] = contextvars.ContextVar(
    "resilient_order_state", default=None
)


class _OrderState:
    __slots__ = ("has_key", "maybe_sent")

    def __init__(self, has_key: bool) -> None:
        self.has_key = has_key
        self.maybe_sent = False  # some attempt failed after the order may have been executed

    def saw(self, exc: BaseException) -> None:
        """Note an attempt's failure (failure path only)."""
        if not self.maybe_sent and _ambiguous(exc):
            self.maybe_sent = True


def _attempt_failed(exc: BaseException) -> None:
    state = _order_state.get()
    if state is not None:
        state.saw(exc)


def _ambiguous(exc: BaseException) -> bool:
    """A failure after which the broker may have executed the order: a timeout, a reset, a
    5xx (not a refused connection or a 429, which prove it never left, nor an answer)."""
    return is_transient(exc) and not proves_not_sent(exc)


def _priority_bulkhead(call: Callable[..., Any], svc: ServiceSettings, kind: str) -> Any:
    """[load] The service's bulkhead around one method, at the priority of its kind."""
    return get_bulkhead(
        svc.name,
        max_concurrent=svc.bulkhead,
        max_queue=svc.bulkhead_max_queue,
        queue_timeout=svc.bulkhead_queue_timeout,
    ).decorate(call, kind)


def _priority_bulkhead_data(name: str) -> dict[str, Any]:
    """[load] The service bulkhead's snapshot for its health component."""
    return bulkheads.get(name).snapshot().to_dict() if name in bulkheads else {}


def _order_is_idempotent(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    state = _order_state.get()
    return state is not None and state.has_key


def _cacheable(exc: BaseException) -> bool:
    """Whether a read's failure may be answered from the cache: an outage, not an answer."""
    if http_status(exc) in (404, 410):
        return False
    return classify(exc) not in _NO_CACHE_CATEGORIES


def _retryable(exc: BaseException) -> bool:
    # The client-side limiter has already waited as long as allowed: retrying cannot help.
    return not isinstance(exc, RateLimitExceeded) and is_transient(exc)


def _limited(
    call: Callable[..., Any],
    limiter: ServiceRateLimiter,
    asynchronous: bool,
    weight: int,  # [load] the method's cost and its own linked limit
    method: str,
) -> Callable[..., Any]:
    """``call`` after the client-side rate limit lets it through (waiting as allowed)."""
    if asynchronous:

        async def alimited(*args: Any, **kwargs: Any) -> Any:
            await limiter.acquire(weight, method)
            return await call(*args, **kwargs)

        return alimited

    def limited(*args: Any, **kwargs: Any) -> Any:
        limiter.acquire_sync(weight, method)
        return call(*args, **kwargs)

    return limited


def _counted(call: Callable[..., Any], asynchronous: bool) -> Callable[..., Any]:
    """An order attempt whose failure is noted in the order's state (see :class:`_OrderState`)."""
    if asynchronous:

        async def acounted(*args: Any, **kwargs: Any) -> Any:
            try:
                return await call(*args, **kwargs)
            except Exception as exc:
                _attempt_failed(exc)
                raise

        return acounted

    def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            _attempt_failed(exc)
            raise

    return counted


def _record(exc: BaseException, component: str) -> None:
    """Count ``exc`` in the error tracker, never raising (accounting must not add a failure)."""
    with contextlib.suppress(Exception):
        record_error(exc, component=component)


def _shell(
    fn: Callable[..., Any],
    steps: Callable[[tuple[Any, ...], dict[str, Any]], Steps[Any]],
    asynchronous: bool,
) -> Callable[..., Any]:
    """``fn``'s stand-in that runs ``steps(args, kwargs)``, as ``fn`` is: sync or async."""
    if asynchronous:

        async def acall(*args: Any, **kwargs: Any) -> Any:
            return await arun(steps(args, kwargs))

        return functools.wraps(fn)(acall)

    def call(*args: Any, **kwargs: Any) -> Any:
        return run(steps(args, kwargs))

    return functools.wraps(fn)(call)


def _declared_kinds(
    name: str, kinds: Mapping[str, str] | None, methods: Mapping[str, Any]
) -> dict[str, str]:
    """Validate ``create_resilient_broker(..., kinds={...})``."""
    if not kinds:
        return {}
    problems = []
    for method, kind in kinds.items():
        if kind not in METHOD_KINDS:
            problems.append(
                f"kinds[{method!r}] = {kind!r} is not a method kind; use one of "
                + ", ".join(METHOD_KINDS)
            )
        elif method not in methods:
            problems.append(
                f"kinds[{method!r}]: the wrapped client has no public method {method!r}"
            )
    if problems:
        raise ValueError(f"service {name!r}: " + "; ".join(problems))
    return dict(kinds)


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
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a resilient service needs a non-empty name, e.g. 'main_broker'")
        methods = public_methods(target)
        declared = _declared_kinds(name, kinds, methods)
        if role == "broker":
            disable_hidden_retries(target, name)
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
            _undeclared=frozenset(),
            _pipelines={},
            _live={},
        )
        if paper is None:
            paper = settings.paper
        if paper is None:
            # Only a literal True counts: a method or a string named "paper" is no proof.
            paper = (
                getattr(target, "paper", None) is True or getattr(target, "is_paper", None) is True
            )
        self.__dict__["_is_paper"] = paper
        self.__dict__["_undeclared"] = frozenset()
        self.__dict__["_exclusions"] = parse_exclude(settings.exclude)
        self.__dict__["_business"] = self._is_business
        # [load] weighted, linked limits with the venue's feedback (services.<name>.methods.*)
        self.__dict__["_limiter"] = limiter_for(name, settings, context.config.redis)
        # Fail closed: a broker method nobody declared is guarded like an order by the trading
        # switches; a market-data method is a read.
        default_kind = "read" if role == "market_data" else None
        undeclared: set[str] = set()
        for method_name, bound in methods.items():
            policy = settings.for_method(method_name)
            kind = (
                declared.get(method_name)
                or policy.kind
                or guess_kind(method_name, default=default_kind)
            )
            if kind is None:
                kind = "other"
                undeclared.add(method_name)
            self._kinds[method_name] = kind
            wrapped = self._wrap(method_name, bound, kind, policy)
            if method_name in undeclared:
                wrapped = self._guarded(method_name, bound, wrapped, is_async_callable(bound))
            prices = kind == "read" and ("price" in method_name or "quote" in method_name)
            wrapped = self._timed(wrapped, bound, prices and settings.resilience_enabled)
            if kind == "read":  # stale-price guard: max_age= (trading/_freshness.py)
                wrapped = with_max_age(wrapped, bound, name, method_name, is_async_callable(bound))
            self._methods[method_name] = wrapped
            self.__dict__[method_name] = wrapped
        self.__dict__["_undeclared"] = frozenset(undeclared)
        # The proxy's own price and position readers, asked when an order is risk-checked.
        # Live calls only: a risk check never values anything from a cached fallback.
        own_prices = tuple(self._live[n] for n in PRICE_METHODS if n in self._live)
        self.__dict__.update(
            _own_prices=own_prices,
            _own_positions=tuple(self._live[n] for n in _POSITION_METHODS if n in self._live),
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

    def live_method(self, name: str) -> Callable[..., Any] | None:
        """The read ``name`` without its cached fallback (timeout, breaker and retry only), or
        ``None``; risk checks read prices and positions through these."""
        live: dict[str, Callable[..., Any]] = self._live
        return live.get(name)

    @property
    def undeclared_methods(self) -> frozenset[str]:
        """Broker methods of no known kind: refused like orders by the trading switches until
        declared (``kinds=`` or ``services.<name>.methods.<method>.kind``)."""
        names: frozenset[str] = self._undeclared
        return names

    @property
    def tracked_positions(self) -> dict[str, float]:
        """Net quantities of the orders sent through this proxy."""
        book: PositionBook = self._book
        return book.snapshot()

    # -- wrapping ---------------------------------------------------------------------------

    def _timed(
        self, call: Callable[..., Any], fn: Callable[..., Any], prices: bool
    ) -> Callable[..., Any]:
        """Record each call's outcome and latency for the component's rolling success metrics
        (availability, error rate, p95 of calls). A cached answer is recorded, with the time
        the caller waited for it, by the fallback's event. An order refused by a risk rule is
        a decision, not a failure, and is not counted; a business outcome
        (``services.<name>.exclude``) counts as an answer. With ``prices``, a live price is
        remembered."""
        record = stats(self._name).record
        clock = get_clock
        business = self._is_business  # a business outcome is an answer: the service is up
        remember = self._remember_price if prices else None

        def failed(exc: Exception, start: float) -> None:
            if not isinstance(exc, RiskLimitError):
                record(business(exc), clock().monotonic() - start)

        def done(
            start: float, before: FallbackInfo | None, result: Any, args: Any, kwargs: Any
        ) -> Any:
            if last_fallback() is before:  # a live answer
                record(True, clock().monotonic() - start)
                if remember is not None:
                    remember(args, kwargs, result)
            return result

        if is_async_callable(fn):

            async def atimed(*args: Any, **kwargs: Any) -> Any:
                start, before = clock().monotonic(), last_fallback()
                try:
                    result = await call(*args, **kwargs)
                except Exception as exc:
                    failed(exc, start)
                    raise
                return done(start, before, result, args, kwargs)

            return functools.wraps(call)(atimed)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start, before = clock().monotonic(), last_fallback()
            try:
                result = call(*args, **kwargs)
            except Exception as exc:
                failed(exc, start)
                raise
            return done(start, before, result, args, kwargs)

        return functools.wraps(call)(timed)

    def _wrap(
        self, method: str, fn: Callable[..., Any], kind: str, policy: MethodPolicy
    ) -> Callable[..., Any]:
        asynchronous = is_async_callable(fn)
        if kind == "order":
            return self._wrap_order(method, fn, policy, asynchronous)
        call = self._pipeline(method, fn, kind, policy, asynchronous)
        if kind == "cancel" and self._role == "broker":
            return self._routed(method, fn, call, policy, asynchronous)
        if kind != "read":
            return call
        self._live[method] = call
        if not self._settings.resilience_enabled:
            return call
        # fallback(cache) around retry(breaker(timeout(fn))): one episode per service, one
        # cache entry per method and arguments; an answer (a 404 included) is never replaced.
        read: Callable[..., Any] = fallback(
            cache=True,
            on=_cacheable,
            name=self._name,
            cache_key=f"{self._name}.{method}",
            cache_ttl=policy.cache_ttl,
            cached_as=functools.partial(self._serve, method),
        )(call)
        return read

    def _guarded(
        self, method: str, fn: Callable[..., Any], call: Callable[..., Any], asynchronous: bool
    ) -> Callable[..., Any]:
        """An undeclared broker method: it may place an order, so the trading switches apply
        (with live trading off it goes only to a paper broker that has it)."""
        self._pipelines[method] = call
        if asynchronous:

            async def aguarded(*args: Any, **kwargs: Any) -> Any:
                return await self._undeclared_target(method, True)(*args, **kwargs)

            return functools.wraps(fn)(aguarded)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._undeclared_target(method, False)(*args, **kwargs)

        return functools.wraps(fn)(guarded)

    def _undeclared_target(self, method: str, asynchronous: bool) -> Callable[..., Any]:
        target = self._order_target(method, asynchronous, undeclared=True)
        state: str = self._context.state.value
        if state != "active":
            self._risk_check(self._context.risk, state, None, None, 0.0)
        return target

    def _is_business(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a business outcome (a rejection, a validation error, a 404, a
        risk refusal), not a failure of the service: ``services.<name>.exclude``."""
        categories, added, removed = self._exclusions
        status = http_status(exc)
        if status is not None:
            if status in added:
                return True
            if status in removed:
                return False
        return str(classify(exc)) in categories

    def _breaker(self) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """The service's breaker decorator (one breaker per service, business outcomes
        excluded). Only service-level overrides apply to it. With the process configuration,
        unset values are left to the decorator so they follow reloads; a factory given another
        configuration pins every value from that configuration."""
        service = self._settings.policy
        follow = self._context.follows_process_config
        options: dict[str, Any] = {
            key: getattr(service, key)
            for key in ("failure_threshold", "reset_timeout")
            if key in service.explicit or not follow
        }
        if not follow:
            res = self._context.config.resilience
            options["half_open_max_calls"] = res.circuit_breaker_half_open_max_calls
            options["success_threshold"] = res.circuit_breaker_success_threshold
        return breaker(self._name, exclude=self._business, **options)

    def _pipeline(
        self,
        method: str,
        fn: Callable[..., Any],
        kind: str,
        policy: MethodPolicy,
        asynchronous: bool,
    ) -> Callable[..., Any]:
        """retry(rate limit(breaker(timeout(fn)))) for one method of the wrapped object (for an
        order: retry(rate limit(timeout(fn))), the breaker going around the whole order)."""
        if not self._settings.resilience_enabled:
            return fn  # canary switch off: the plain client
        name: str = self._name
        seconds = policy.order_timeout if kind in ("order", "cancel") else policy.timeout
        call: Callable[..., Any] = timeout(seconds, name=f"{name}.{method}")(fn)
        follow = self._context.follows_process_config
        if kind != "order":  # an order's breaker wraps the whole order, lookups included
            call = self._breaker()(call)
        if self._settings.bulkhead:  # [load] priority bulkhead: cancel > order > other > read
            call = _priority_bulkhead(call, self._settings, kind)
        limiter: ServiceRateLimiter | None = self._limiter
        if limiter is not None:  # [load] 429/418 and usage headers feed the limiter
            call = limiter.watch(call, asynchronous, self._target)
        if kind == "order":
            call = _counted(call, asynchronous)
        if limiter is not None:
            call = _limited(call, limiter, asynchronous, policy.weight, method)
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
        call = retry(**options)(call)
        return functools.wraps(fn)(call)

    # -- reads: cached fallback -------------------------------------------------------------

    def _remember_price(self, args: tuple[Any, ...], kwargs: dict[str, Any], value: Any) -> None:
        """Keep the price a price or quote read answered (called only for those methods)."""
        symbol = _symbol_arg(args, kwargs)
        price = price_of(value) if symbol else None
        if symbol and price is not None:
            self._context.remember_price(symbol, price)

    def _serve(self, method: str, value: Any, age: float, exc: BaseException) -> Any:
        """What a cached answer of ``method`` is served as (a price marked stale), noted for
        the service's health and for :func:`last_fallback`."""
        state: _ServiceState = self._state
        info = FallbackInfo(self._name, method, float(age), _public_name(type(exc)))
        with state.lock:
            state.fallbacks_served += 1
            state.last_fallback = info
            state.last_fallback_at = get_clock().time()
        set_last_fallback(info)
        return mark_stale(value, info.age, self._name)

    # -- orders -----------------------------------------------------------------------------

    def _mode(self) -> str:
        """``live``, ``paper`` or ``disabled``: where orders of this service go now."""
        features = self._context.config.features
        if not (features.live_trading_enabled or features.paper_trading_enabled):
            return "disabled"
        if self._is_paper:
            return "paper"
        return "live" if features.live_trading_enabled else "paper"

    def _order_target(
        self, method: str, asynchronous: bool, undeclared: bool = False
    ) -> Callable[..., Any]:
        """The function an order method must call now, per the trading switches.

        Raises:
            TradingDisabledError: live trading is off and no paper broker can take the order.
        """
        features = self._context.config.features
        name = self._name
        trading_on = features.live_trading_enabled or features.paper_trading_enabled
        if trading_on and (self._is_paper or features.live_trading_enabled):
            return self._methods_raw[method]
        what = "order refused"
        declare = ""
        if undeclared:
            what = f"{method}() refused (a method of unknown kind is guarded like an order)"
            declare = (
                f"; if {method}() places no order, declare its kind: "
                f'services.{name}.methods.{method}.kind = "read" (or "other", "cancel") or '
                f'create_resilient_broker(client, {name!r}, kinds={{{method!r}: "read"}})'
            )
        if not features.paper_trading_enabled:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"{what}: live trading is disabled for {name!r} "
                    "(features.live_trading_enabled = false) and paper trading is off; set "
                    "AI_TRADER_FEATURES__PAPER_TRADING_ENABLED=true and register a paper broker, "
                    "or enable live trading" + declare
                ),
            )
        context: TradingContext = self._context
        paper = context.paper_method(name, method, asynchronous)
        if paper is None and context.paper_broker(name) is not None:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"{what}: live trading is disabled for {name!r} and the paper broker "
                    f"registered for it has no {method}() method; add one to it or register a "
                    "paper broker that has it" + declare
                ),
            )
        if paper is None:
            raise TradingDisabledError(
                "features.live_trading_enabled",
                message=(
                    f"{what}: live trading is disabled for {name!r} "
                    "(features.live_trading_enabled = false) and no paper broker is registered; "
                    f"register one with factory.register_paper_broker(PaperBroker(), {name!r}) "
                    "(or wrap a paper client: create_resilient_broker(client, name, paper=True))"
                    + declare
                ),
            )
        return paper

    @property
    def _methods_raw(self) -> dict[str, Callable[..., Any]]:
        raw: dict[str, Callable[..., Any]] = self.__dict__["_pipelines"]
        return raw

    def _routed(
        self,
        method: str,
        fn: Callable[..., Any],
        call: Callable[..., Any],
        policy: MethodPolicy,
        asynchronous: bool,
    ) -> Callable[..., Any]:
        """A cancel is never refused: no trading switch or state applies, and when the circuit
        is open it is still attempted once, under its own timeout, its outcome recorded.

        It goes where the order is: the paper broker while trading on paper (when that broker
        has the method and knows the order), else the wrapped broker."""
        self._pipelines[method] = call
        direct = timeout(policy.order_timeout, name=f"{self._name}.{method}")(fn)

        def steps(args: Any, kwargs: Any) -> Steps[Any]:
            paper = None
            if not self._is_paper and self._mode() == "paper":
                paper = self._context.paper_method(self._name, method, asynchronous)
            if paper is not None:
                try:
                    return (yield functools.partial(paper, *args, **kwargs))
                except Exception as exc:
                    if not no_position(exc) and not isinstance(exc, LookupError):
                        raise
                    # not a paper order: it was placed with the live broker
            try:
                return (yield functools.partial(call, *args, **kwargs))
            except CircuitOpenError:
                pass
            try:
                return (yield functools.partial(direct, *args, **kwargs))
            except Exception as exc:
                _record(exc, self._name)
                raise

        return _shell(fn, steps, asynchronous)

    def _wrap_order(
        self, method: str, fn: Callable[..., Any], policy: MethodPolicy, asynchronous: bool
    ) -> Callable[..., Any]:
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None
        pipeline = self._pipeline(method, fn, "order", policy, asynchronous)
        self._pipelines[method] = pipeline
        layer = getattr(pipeline, "__resilient_layer__", None)
        if layer is not None:
            layer.outermost = False  # the order's breaker reports the order's one outcome
        own_lookup = self._own_lookup(policy)
        params_key = ccxt_id_key(self._target)
        send = self._asend if asynchronous else self._send
        guarded = self._breaker()(send) if pipeline is not fn else send

        def lookup_for(target: Callable[..., Any]) -> Callable[..., Any] | None:
            """Look orders up where they were sent: the paper broker while paper trading."""
            if target is pipeline:
                return own_lookup
            context: TradingContext = self._context
            for name in _LOOKUP_METHODS:
                found = context.paper_method(self._name, name, asynchronous)
                if found is not None:
                    return found
            return None

        def steps(args: Any, kwargs: Any) -> Steps[Any]:
            target = self._order_target(method, asynchronous)
            prepared = prepare_order_call(sig, args, kwargs, method=method, params_key=params_key)
            yield from self._check_steps(prepared.intent, asynchronous)
            result = yield functools.partial(
                guarded if target is pipeline else send,
                target,
                lookup_for(target),
                prepared,
                method,
            )
            self._sent(prepared.intent)
            return result

        return _shell(fn, steps, asynchronous)

    def _own_lookup(self, policy: MethodPolicy) -> Callable[..., Any] | None:
        """The wrapped broker's look-up of an order by client order id, under the read
        timeout."""
        fn = next(
            (
                getattr(self._target, n)
                for n in _LOOKUP_METHODS
                if callable(getattr(self._target, n, None))
            ),
            None,
        )
        if fn is None and is_ccxt(self._target):
            fn = ccxt_lookup(self._target)
        if fn is None or not self._settings.resilience_enabled:
            return fn
        lookup: Callable[..., Any] = timeout(policy.timeout, name=f"{self._name}.lookup")(fn)
        return lookup

    def _send_steps(
        self,
        asynchronous: bool,
        target: Callable[..., Any],
        lookup: Callable[..., Any] | None,
        prepared: OrderCall,
        method: str,
    ) -> Steps[Any]:
        """Send one order (every attempt) and settle its outcome: the order, its definitive
        error, or :class:`OrderStatusUnknown`."""
        state = _OrderState(prepared.has_idempotency_key)
        token = _order_state.set(state)
        try:
            return (yield functools.partial(target, *prepared.args, **prepared.kwargs))
        except Exception as exc:
            if not self._settle(exc, state, prepared):
                raise
            cid = prepared.intent.client_order_id
            lookup = with_symbol(lookup, prepared.intent.symbol)
            if (
                cid is not None
                and lookup is not None
                and (asynchronous or not is_async_callable(lookup))
            ):
                found = yield from self._lookup_steps(lookup, cid, asynchronous)
                if found is not None:
                    return found
            raise self._unknown(exc, prepared, method, lookup) from exc
        finally:
            _order_state.reset(token)

    # The shells the order's breaker wraps: (target, lookup, prepared, method) of _send_steps.
    async def _asend(self, *order: Any) -> Any:
        return await arun(self._send_steps(True, *order))

    def _send(self, *order: Any) -> Any:
        return run(self._send_steps(False, *order))

    @staticmethod
    def _settle(exc: Exception, state: _OrderState, prepared: OrderCall) -> bool:
        """Whether the order's outcome is open after ``exc``: a duplicate-id rejection (on any
        attempt: an SDK's hidden retry may have sent the first), or a failure of this or an
        earlier attempt after which the broker may have executed it."""
        if isinstance(exc, RiskLimitError | CircuitOpenError):
            return False
        state.saw(exc)
        if prepared.has_idempotency_key and duplicate_order(exc):
            return True
        return state.maybe_sent

    def _lookup_steps(
        self, lookup: Callable[..., Any], client_order_id: str, asynchronous: bool
    ) -> Steps[Any]:
        """Look the order up by its client order id, with backoff (a broker reports a fresh
        order as not found for a while)."""
        trading = self._context.config.trading
        attempts, backoff = trading.order_lookup_attempts, trading.order_lookup_backoff
        for attempt in range(attempts):
            try:
                found = yield functools.partial(lookup, client_order_id)
            except Exception:
                found = None
            if is_order(found):
                return found
            if attempt + 1 < attempts:
                clock = get_clock()
                yield functools.partial(
                    clock.asleep if asynchronous else clock.sleep, backoff * 2**attempt
                )
        return None

    def _unknown(
        self,
        exc: Exception,
        prepared: OrderCall,
        method: str,
        lookup: Callable[..., Any] | None,
    ) -> OrderStatusUnknown:
        """Keep the order for reconciliation and build the error that reports it."""
        intent = prepared.intent
        context: TradingContext = self._context
        context.unknown.add(
            UnknownOrder(
                client_order_id=intent.client_order_id,
                service=self._name,
                method=method,
                symbol=intent.symbol,
                error_type=_public_name(type(exc)),
                lookup=lookup,
                intent=intent,
            )
        )
        with contextlib.suppress(Exception):
            metrics.inc("orders_unknown", {"service": self._name})
        return OrderStatusUnknown(
            intent.client_order_id, service=self._name, method=method, symbol=intent.symbol
        )

    def _sent(self, intent: OrderIntent) -> None:
        self._book.apply(intent)
        with self._state.lock:
            self._state.orders_sent += 1

    def _refused(self, exc: RiskLimitError) -> None:
        with self._state.lock:
            self._state.orders_refused += 1
        _record(exc, self._name)

    def _position_readers(self, asynchronous: bool) -> Sequence[Callable[..., Any]]:
        """Where the current position comes from: the broker that takes the orders now."""
        if not self._is_paper and self._mode() == "paper":
            context: TradingContext = self._context
            readers = [context.paper_method(self._name, n, asynchronous) for n in _POSITION_METHODS]
            return [r for r in readers if r is not None]
        own: tuple[Callable[..., Any], ...] = self._own_positions
        return own

    def _position_steps(self, symbol: str, asynchronous: bool) -> Steps[float]:
        for reader in self._position_readers(asynchronous):
            if not asynchronous and is_async_callable(reader):
                continue
            try:
                qty = quantity_of((yield functools.partial(reader, symbol)))
            except Exception as exc:
                if no_position(exc):
                    return 0.0
                break
            if qty is not None:
                return qty
        # The broker cannot tell: count the orders sent through this proxy.
        book: PositionBook = self._book
        return book.get(symbol)

    def _check_steps(self, intent: OrderIntent, asynchronous: bool) -> Steps[None]:
        context: TradingContext = self._context
        risk, state = context.risk, context.state.value
        price, position = None, 0.0
        if intent.problem is None and intent.symbol is not None and state != "halted":
            if risk.enabled:
                price = yield from context.price_steps(
                    intent.symbol, self._own_prices, asynchronous
                )
            if risk.enabled or state == "reducing":
                position = yield from self._position_steps(intent.symbol, asynchronous)
        self._risk_check(risk, state, intent, price, position)

    def _risk_check(
        self,
        risk: RiskChecker,
        state: str,
        intent: OrderIntent | None,
        price: float | None,
        position: float,
    ) -> None:
        """Apply the trading state and the risk rules to one order (``None``: an undeclared
        method), counting and recording a refusal."""
        try:
            check_trading_state(state, intent, position)
            if intent is not None:
                risk.check(intent, market_price=price, position=position)
                throttle = self._context.throttle(self._name)
                if throttle is not None:
                    throttle.check()
        except RiskLimitError as exc:
            self._refused(exc)
            raise

    # -- reconciliation ----------------------------------------------------------------------

    async def reconcile(self) -> dict[str, list[dict[str, Any]]]:
        """Check this service's orders of unknown outcome with the broker: each is looked up
        by its client order id (once), and the broker's open orders, where it lists them, are
        matched against them.

        Returns:
            ``found`` (the broker holds it: counted as sent), ``absent`` (the broker answered
            that it has no such order, after the order timeout), ``unknown`` (still open).
        """
        context: TradingContext = self._context
        report: dict[str, list[dict[str, Any]]] = {"found": [], "absent": [], "unknown": []}
        pending = context.unknown.pending(self._name)
        if not pending:
            return report
        open_ids = await self._open_order_ids()
        for order in pending:
            order.checks += 1
            outcome = "unknown"
            cid = order.client_order_id
            if cid is not None and cid in open_ids:
                outcome = "found"
            elif cid is not None and order.lookup is not None:
                try:
                    found = order.lookup(cid)
                    if isinstance(found, Awaitable):
                        found = await found
                    answered = True
                except Exception as exc:
                    found, answered = None, no_position(exc)  # a 404 is an answer
                if is_order(found):
                    outcome = "found"
                elif answered and order.age > self._settings.policy.order_timeout:
                    outcome = "absent"
            if outcome == "found" and order.intent is not None:
                self._sent(order.intent)
            if outcome != "unknown":
                context.unknown.remove(order)
            report[outcome].append(order.to_dict())
        return report

    async def _open_order_ids(self) -> set[str]:
        """Client order ids of the broker's open orders, where it lists them."""
        for name in _OPEN_ORDER_METHODS:
            fn = getattr(self._target, name, None)
            if not callable(fn):
                continue
            try:
                value = fn()
                if isinstance(value, Awaitable):
                    value = await value
            except Exception:
                return set()
            ids: set[str] = set()
            for item in value if isinstance(value, list | tuple) else ():
                for key in ("client_order_id", "clientOrderId", "orderRef", "order_ref"):
                    cid = item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)
                    if isinstance(cid, str) and cid:
                        ids.add(cid)
            return ids
        return set()

    # -- health -----------------------------------------------------------------------------

    def _breaker_snapshot(self) -> Any:
        try:
            return breakers.get(self._name).snapshot()
        except Exception:
            return None

    def _serving_cache(self) -> bool:
        """Whether the latest read of some method of the service was answered from the cache
        (the service's fallback episode)."""
        episode = fallback_status().get(self._name)
        return episode is not None and episode.degraded

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
        unknown: list[dict[str, Any]] = []
        if self._role == "broker":
            unknown = self._context.unknown.snapshot(self._name)
            data.update(
                orders_unknown=unknown,
                trading_mode=self._mode(),
                trading_state=self._context.state.value,
                **(
                    {"trading_state_error": self._context.state.shared_error}
                    if self._context.state.shared_error
                    else {}
                ),
                orders_sent=st.orders_sent,
                orders_refused=st.orders_refused,
            )
        limiter: ServiceRateLimiter | None = self._limiter
        if limiter is not None:
            data["api_usage"] = await limiter.usage()
        if self._settings.bulkhead:  # [load] the bulkhead's limits, queue and refusals
            data["bulkhead"] = _priority_bulkhead_data(self._name)
        status, detail = "healthy", ""
        if snap is not None and state != "closed":  # the breaker's own words
            status, detail = snap.health()
            if state == "open" and st.fallbacks_served:
                detail += f"; serving cached data ({st.fallbacks_served} served)"
        elif self._serving_cache() and st.last_fallback is not None:
            status = "degraded"
            detail = (
                f"serving cached data: last answer of {st.last_fallback.method} was "
                f"{st.last_fallback.age:.1f}s old"
            )
        elif limiter is not None and limiter.degraded:
            status, detail = "degraded", "rate limit counting in memory (Redis unreachable)"
        elif unknown:
            oldest = max(o["age_seconds"] for o in unknown)
            status = "degraded"
            detail = (
                f"{len(unknown)} order(s) of unknown outcome (oldest {oldest:.0f}s); "
                "factory.reconcile() checks them"
            )
        data["detail"] = sanitize(detail)
        data["status"] = status
        return data

    async def _aclose(self) -> None:
        """Release the rate limiter's connections."""
        limiter: ServiceRateLimiter | None = self._limiter
        if limiter is not None:
            await limiter.aclose()
