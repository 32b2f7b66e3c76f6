"""The deployment guide's integration API.

```python
from resilient.integration import ResilienceFactory
from resilient.config import ConfigManager

config = ConfigManager().load_config()
factory = ResilienceFactory(config)
await factory.initialize_resilience()
broker = factory.create_resilient_broker(your_broker, "main_broker")
data = factory.create_resilient_market_data(your_market_data, "main_data")
health = await factory.get_orchestrator().get_system_health()
await factory.shutdown()
```
"""

from __future__ import annotations

import asyncio as _asyncio
import contextlib as _contextlib
import functools as _functools
import itertools as _itertools
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from resilient import metrics as _metrics
from resilient._backends import redis as _redis
from resilient._backends import shared_state as _shared_state
from resilient._core.exceptions import ConfigError as _ConfigError
from resilient._core.exceptions import ConfigProblem as _ConfigProblem
from resilient._core.log import enable_logging as _enable_logging
from resilient._core.log import logger as _logger
from resilient._core.log import warn_once as _warn_once
from resilient._core.sanitize import sanitize as _sanitize
from resilient._core.wrapping import is_async_callable as _is_async_callable
from resilient._policies.breaker_storage import set_shared_backend as _set_shared_backend
from resilient._policies.cache import set_fallback_cache as _set_fallback_cache
from resilient.config import current_config as _current_config
from resilient.config import subscribe as _subscribe
from resilient.db import Database as _Database
from resilient.health import HealthOrchestrator as _HealthOrchestrator
from resilient.health import registry as _default_registry
from resilient.trading._context import TradingContext as _TradingContext
from resilient.trading._freshness import TimedPrice as _TimedPrice
from resilient.trading._proxy import ResilientService as _ResilientService
from resilient.trading._settings import DEFAULTS_KEY as _DEFAULTS_KEY
from resilient.trading._settings import service_settings as _service_settings

if TYPE_CHECKING:
    from resilient.config import Config
    from resilient.db import Database
    from resilient.health import HealthRegistry
    from resilient.trading._unknown import UnknownOrders

__all__ = ["ResilienceFactory"]

T = TypeVar("T")
_factory_ids = _itertools.count(1)


class _TradingOrchestrator(_HealthOrchestrator):
    """The factory's orchestrator: its system health also lists ``orders_unknown``, the orders
    whose outcome is unknown (client order id, service, method, symbol, age)."""

    unknown: UnknownOrders | None = None

    def build_dict(self, report: Any) -> dict[str, Any]:
        data = super().build_dict(report)
        if self.unknown is not None:
            data["orders_unknown"] = self.unknown.snapshot()
        return data


class ResilienceFactory:
    """Builds the resilience layer of one application from its configuration.

    Args:
        config: the validated configuration (``ConfigManager().load_config()``; default: the
            process configuration).
        registry: the health registry (default: ``resilient.health.registry``).
        logging: what :meth:`initialize_resilience` does with the package's log records, at
            ``log_level``: ``True`` / ``"stderr"`` (default) writes them to a stderr sink of
            the package's own, carrying only its records; ``"loguru"`` hands them to the
            application's loguru handlers ("I already configure loguru"); ``False`` leaves
            logging as it is. The application's own handlers are never removed or replaced.
        database: start the database component (PostgreSQL when ``database.host`` is set,
            else the embedded SQLite file ``database.sqlite_path``); default ``True``.

    Raises:
        ConfigError: the ``services`` section is invalid.
    """

    def __init__(
        self,
        config: Config | None = None,
        *,
        registry: HealthRegistry | None = None,
        logging: bool | Literal["stderr", "loguru"] = True,
        database: bool = True,
    ) -> None:
        if logging not in (True, False, "stderr", "loguru"):
            raise ValueError(
                f"logging must be True/'stderr', 'loguru' or False, got {logging!r}: 'stderr' "
                "writes resilient's records to a sink of its own, 'loguru' hands them to your "
                "loguru handlers"
            )
        self.config = config if config is not None else _current_config()
        if registry is None:
            registry = _default_registry
        self.registry: HealthRegistry = registry
        self._logging = logging
        self._use_database = database
        self._context = _TradingContext(self.config)
        self._services: dict[str, _ResilientService] = {}
        self._orchestrator: _HealthOrchestrator | None = None
        self._database: Any = None
        self._cache: Any = None
        self._shared: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._initialized = False
        self._standins: set[str] = set()
        # (proxy, method name, original method) of proxies made before initialize_resilience()
        self._first_call_guards: list[tuple[_ResilientService, str, Any]] = []
        self._warn_key = f"factory-not-initialized:{next(_factory_ids)}"
        self._reconciler: Any = None
        self._validate_services()

    # -- configuration ------------------------------------------------------------------

    def _validate_services(self) -> None:
        section = self.config.section("services")
        problems: list[_ConfigProblem] = []
        for name, value in section.items():
            if not isinstance(value, Mapping):
                problems.append(
                    _ConfigProblem(
                        key=f"services.{name}",
                        rule="must be a table of settings",
                        fix=f"write [default.services.{name}] as a table",
                        env=self.config.env,
                    )
                )
                continue
            try:
                _service_settings(self.config, str(name) if name != _DEFAULTS_KEY else "_")
            except _ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
        if problems:
            raise _ConfigError(problems, env=self.config.env)

    def _on_reload(self, config: Config) -> None:
        self.config = config
        self._context.update_config(config)

    # -- start-up -----------------------------------------------------------------------

    async def initialize_resilience(self) -> dict[str, Any]:
        """Start logging, the database and the cache (when configured) and the health monitor
        (when ``resilience.health_check_enabled``); run every health check once.

        Never raises because a dependency is unreachable: the report says which components are
        degraded or unhealthy.

        Returns:
            The first health report as a dict.
        """
        self._initialized = True
        self._drop_first_call_guards()
        if self._logging:
            _enable_logging(level=self.config.log_level, propagate=self._logging == "loguru")
        if self.config is _current_config() and self._unsubscribe is None:
            self._unsubscribe = _subscribe(self._on_reload)
        if self._use_database and self._database is None:
            await self._start_database()
        if self._cache is None:
            self._start_cache()
        if self._shared is None:
            self._start_shared_state()
        self._start_trading_state()
        await self.reconcile()
        self._start_reconciler()
        orchestrator = self.get_orchestrator()
        report = await orchestrator.start()
        _logger.info(
            "resilience initialised ({}): {}", self.config.env, report.overall_status.value
        )
        return report.to_dict()

    async def _start_database(self) -> None:
        try:
            database = _Database.from_config(self.config)
            await database.start(registry=self.registry)
            self._database = database
        except Exception as exc:  # a missing driver or bad URL degrades, never crashes
            self._not_started("database", "database component", exc, "unhealthy", critical=True)

    def _start_cache(self) -> None:
        try:
            if self.config.redis.url:
                cache = _redis.enable_redis_cache(
                    self.config.redis.url, timeout=self.config.redis.timeout
                )
            else:
                cache = _redis.get_redis_cache()
            self.registry.register("cache", cache.health_check, critical=False)
            self._cache = cache
        except Exception as exc:
            self._not_started("cache", "cache component", exc, "degraded", critical=False)

    def _start_shared_state(self) -> None:
        """Circuit state in Redis for every breaker when ``resilience.circuit_breaker_shared``."""
        if not (self.config.resilience.circuit_breaker_shared and self.config.redis.url):
            return
        try:
            shared = _shared_state.get_shared_state(self.config.redis.url)
            _set_shared_backend(shared)
            self._shared = shared
            self.registry.register("shared_state", shared.health_check, critical=False)
        except Exception as exc:
            self._not_started(
                "shared_state", "shared circuit state", exc, "degraded", critical=False
            )

    def _start_reconciler(self) -> None:
        """Re-check orders of unknown outcome every ``resilience.health_check_interval``."""
        if self._reconciler is not None:
            return

        async def loop() -> None:
            while True:
                await _asyncio.sleep(self.config.resilience.health_check_interval)
                if self._context.unknown.pending():
                    try:
                        await self.reconcile()
                    except Exception as exc:
                        _logger.warning("reconcile failed: {}", type(exc).__name__)

        self._reconciler = _asyncio.get_running_loop().create_task(loop())

    async def reconcile(self) -> dict[str, list[dict[str, Any]]]:
        """Check the orders of unknown outcome (:class:`resilient.trading.OrderStatusUnknown`)
        with their brokers: by client order id, and against the broker's open orders where it
        lists them. Runs at start and periodically; call it on demand after an outage.

        Returns:
            ``found``, ``absent`` and ``unknown`` orders (client order id, service, age...).
        """
        report: dict[str, list[dict[str, Any]]] = {"found": [], "absent": [], "unknown": []}
        for proxy in list(self._services.values()):
            part = await proxy.reconcile()
            for key, items in part.items():
                report[key].extend(items)
        return report

    @property
    def orders_unknown(self) -> list[dict[str, Any]]:
        """The orders whose outcome is still unknown, with their ages (also in each broker's
        health component as ``orders_unknown``)."""
        return self._context.unknown.snapshot()

    def _start_trading_state(self) -> None:
        """Follow the trading state shared through Redis (when ``redis.url`` is set)."""
        try:
            self._context.state.start()
        except Exception as exc:
            _logger.error("shared trading state not followed: {}", _sanitize(type(exc).__name__))

    def _not_started(
        self, component: str, what: str, exc: Exception, status: str, *, critical: bool
    ) -> None:
        """Log why ``component`` did not start and register it with a fixed ``status``."""
        message = _sanitize(f"{type(exc).__name__}: {exc}")
        _logger.error(what + " not started: {}", message)
        self.registry.register(
            component, lambda: {"status": status, "detail": message}, critical=critical
        )
        self._standins.add(component)

    # -- a factory used before initialize_resilience() ----------------------------------

    def _guard_first_call(self, proxy: _ResilientService) -> None:
        """Until :meth:`initialize_resilience`, each public method of ``proxy`` is a one-shot
        wrapper that warns (once per factory) and puts the method back: no cost after."""
        for method_name, original in list(proxy._methods.items()):
            if proxy.__dict__.get(method_name) is not original:
                continue
            guard = self._first_call_guard(proxy, method_name, original)
            proxy.__dict__[method_name] = guard
            self._first_call_guards.append((proxy, method_name, original))

    def _first_call_guard(self, proxy: _ResilientService, method_name: str, original: Any) -> Any:
        def notice() -> None:
            self._drop_first_call_guards()
            _warn_once(
                self._warn_key,
                "{}.{}() called on a ResilienceFactory that was never initialised: call "
                "`await factory.initialize_resilience()` once at start-up (or use `async with "
                "ResilienceFactory(config) as factory:`). Until then there are no database or "
                "cache components, no health monitor and no alerts, and the fallback cache "
                "stays in-process even with redis.url set.",
                proxy._name,
                method_name,
            )

        if _is_async_callable(original):

            @_functools.wraps(original)
            async def first_async(*args: Any, **kwargs: Any) -> Any:
                notice()
                return await original(*args, **kwargs)

            return first_async

        @_functools.wraps(original)
        def first(*args: Any, **kwargs: Any) -> Any:
            notice()
            return original(*args, **kwargs)

        return first

    def _drop_first_call_guards(self) -> None:
        guards, self._first_call_guards = self._first_call_guards, []
        for proxy, method_name, original in guards:
            if method_name in proxy.__dict__:
                proxy.__dict__[method_name] = original

    # -- services -----------------------------------------------------------------------

    def _create(
        self,
        obj: Any,
        name: str,
        role: str,
        paper: bool | None,
        kinds: Mapping[str, str] | None = None,
    ) -> _ResilientService:
        if obj is None:
            raise TypeError(f"create_resilient_{role}() needs the client object to wrap")
        settings = _service_settings(self.config, name)
        old = self._services.pop(name, None)
        if old is not None and old in self._context.market_data:
            self._context.market_data.remove(old)
        proxy = _ResilientService(
            obj, name, role=role, settings=settings, context=self._context, paper=paper, kinds=kinds
        )
        self._services[name] = proxy
        if role == "market_data":
            self._context.market_data.append(proxy)
        self.registry.register(
            name, _with_usage_metric(name, proxy._health), critical=role == "broker"
        )
        if not self._initialized:
            self._guard_first_call(proxy)
        return proxy

    def create_resilient_broker(
        self,
        broker: T,
        name: str,
        *,
        paper: bool | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> T:
        """Wrap every public method of ``broker`` (sync or async) as service ``name``.

        Reads get timeout, breaker, retry and the last good answer from the cache; orders get
        the trading switches, risk limits, ``trading.default_order_timeout`` and the breaker,
        and are retried only when that cannot duplicate them.

        Args:
            broker: the broker client.
            name: the service name (breaker, health component, ``services.<name>`` settings).
            paper: whether ``broker`` trades on paper (default: its ``paper`` attribute or
                ``services.<name>.paper``).
            kinds: method name → ``"read" | "order" | "cancel" | "other"`` for methods the SDK
                vocabulary does not know (an undeclared method is refused like an order while
                live trading is off); overrides ``services.<name>.methods.<m>.kind``.
        """
        return cast(T, self._create(broker, name, "broker", paper, kinds))

    def create_resilient_market_data(self, market_data: T, name: str) -> T:
        """Wrap every public method of ``market_data`` as service ``name`` (all reads by
        default: timeout, breaker, retry and the last good answer from the cache)."""
        return cast(T, self._create(market_data, name, "market_data", None))

    def register_paper_broker(self, broker: Any, name: str | None = None) -> None:
        """Send orders of service ``name`` (every service when ``None``) to ``broker`` while
        ``features.live_trading_enabled`` is false and ``paper_trading_enabled`` is true."""
        self._context.register_paper_broker(broker, name)

    @property
    def trading_state(self) -> str:
        """``"active"``, ``"reducing"`` or ``"halted"`` (see :meth:`set_trading_state`)."""
        return self._context.state.value

    def set_trading_state(self, state: str) -> None:
        """Set the trading state of every broker proxy of this factory (and, when
        ``redis.url`` is set, of every worker sharing that Redis): ``"active"``, ``"reducing"``
        (only orders that reduce the current position) or ``"halted"`` (only cancels).

        Raises:
            ValueError: not a trading state.
        """
        self._context.state.set(state)

    def record_price(
        self, symbol: str, price: float, *, timestamp: float | None = None, source: str = ""
    ) -> None:
        """Record a price seen on a stream (``timestamp``: when it was observed, wall-clock
        seconds; default now). Orders are valued on the freshest price known, and never on
        one older than ``trading.max_price_age``."""
        self._context.remember_price(symbol, _TimedPrice(price, timestamp=timestamp, source=source))

    def service(self, name: str) -> _ResilientService:
        """The proxy created for ``name``.

        Raises:
            KeyError: no service of that name (the message lists the known ones).
        """
        try:
            return self._services[name]
        except KeyError:
            known = ", ".join(sorted(self._services)) or "none"
            raise KeyError(f"no resilient service {name!r} (known: {known})") from None

    @property
    def services(self) -> dict[str, _ResilientService]:
        """Every service created by this factory."""
        return dict(self._services)

    @property
    def database(self) -> Database:
        """The database the factory started (PostgreSQL when ``database.host`` is set, else
        the embedded SQLite file): use it rather than a second pool.
        ``Database.from_config()`` for the same URL returns this same object too.

        Raises:
            RuntimeError: before :meth:`initialize_resilience`, with ``database=False``, or
                when the database could not start (the message says which).
        """
        if self._database is not None:
            return cast("Database", self._database)
        if not self._use_database:
            raise RuntimeError(
                "this ResilienceFactory was built with database=False: it has no database"
            )
        if not self._initialized:
            raise RuntimeError(
                "the factory's database starts in `await factory.initialize_resilience()`: "
                "call it first"
            )
        detail = ""
        comp = self.registry.names()
        if "database" in comp:
            detail = " (see the 'database' health component for why)"
        raise RuntimeError(f"the factory's database did not start{detail}")

    # -- health -------------------------------------------------------------------------

    def get_orchestrator(self) -> _HealthOrchestrator:
        """The health orchestrator (``await get_orchestrator().get_system_health()``)."""
        if self._orchestrator is None:
            orchestrator = _TradingOrchestrator(self.registry, config=self.config)
            orchestrator.unknown = self._context.unknown
            self._orchestrator = orchestrator
        return self._orchestrator

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop the health monitor, close the database pool, the cache and the rate limiters'
        connections, and unregister this factory's components. Idempotent."""
        if self._orchestrator is not None:
            await self._orchestrator.stop()
        self._context.state.stop()
        if self._reconciler is not None:
            task, self._reconciler = self._reconciler, None
            task.cancel()
            with _contextlib.suppress(_asyncio.CancelledError):
                await task
        for name, proxy in list(self._services.items()):
            self.registry.unregister(name)
            try:
                await proxy._aclose()
            except Exception as exc:
                _logger.warning("closing service {} failed: {}", name, type(exc).__name__)
        if self._database is not None:
            database, self._database = self._database, None
            try:
                await database.close()
            except Exception as exc:
                _logger.warning("closing the database failed: {}", type(exc).__name__)
        # only a stand-in of the factory's own: a database still held elsewhere keeps its
        # component (Database.close() unregisters it when its last user closes it)
        if "database" in self._standins:
            self.registry.unregister("database")
        if self._shared is not None:
            shared, self._shared = self._shared, None
            _set_shared_backend(None)
            try:
                shared.close()
            except Exception as exc:
                _logger.warning("closing the shared circuit state failed: {}", type(exc).__name__)
        self.registry.unregister("shared_state")
        if self._cache is not None:
            cache, self._cache = self._cache, None
            try:
                await cache.close()
            except Exception as exc:
                _logger.warning("closing the cache failed: {}", type(exc).__name__)
            if self.config.redis.url:
                _redis.close_workers()
                _redis.forget_default_cache(cache)
                _set_fallback_cache(None)
        self.registry.unregister("cache")
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def __aenter__(self) -> ResilienceFactory:
        await self.initialize_resilience()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()


def _with_usage_metric(
    name: str, check: Callable[[], Awaitable[dict[str, Any]]]
) -> Callable[[], Awaitable[dict[str, Any]]]:
    """A service's health check that also reports its rate-limit usage to the metrics."""

    async def health() -> dict[str, Any]:
        data = await check()
        usage = data.get("api_usage")
        if isinstance(usage, Mapping) and "window_limit" in usage:
            with _contextlib.suppress(Exception):  # a metric never fails a health check
                _metrics.set_rate_limit_usage(
                    name, used=float(usage["window_used"]), limit=float(usage["window_limit"])
                )
        return data

    return health
