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

from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from ._exceptions import ConfigError, ConfigProblem
from ._logging import enable_logging, logger
from ._sanitize import sanitize
from .config import Config, current_config, subscribe
from .health import HealthOrchestrator, HealthRegistry
from .trading._context import TradingContext
from .trading._freshness import TimedPrice
from .trading._proxy import ResilientService
from .trading._settings import DEFAULTS_KEY, service_settings

__all__ = ["ResilienceFactory"]

T = TypeVar("T")


class ResilienceFactory:
    """Builds the resilience layer of one application from its configuration.

    Args:
        config: the validated configuration (``ConfigManager().load_config()``; default: the
            process configuration).
        registry: the health registry (default: ``resilient.health.registry``).
        logging: turn on the package's logging at ``log_level`` in
            :meth:`initialize_resilience` (default ``True``).
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
        logging: bool = True,
        database: bool = True,
    ) -> None:
        self.config = config if config is not None else current_config()
        if registry is None:
            from .health import registry as default_registry

            registry = default_registry
        self.registry: HealthRegistry = registry
        self._logging = logging
        self._use_database = database
        self._context = TradingContext(self.config)
        self._services: dict[str, ResilientService] = {}
        self._orchestrator: HealthOrchestrator | None = None
        self._database: Any = None
        self._cache: Any = None
        self._shared: Any = None
        self._unsubscribe: Callable[[], None] | None = None
        self._validate_services()

    # -- configuration ------------------------------------------------------------------

    def _validate_services(self) -> None:
        section = self.config.section("services")
        problems: list[ConfigProblem] = []
        for name, value in section.items():
            if not isinstance(value, Mapping):
                problems.append(
                    ConfigProblem(
                        key=f"services.{name}",
                        rule="must be a table of settings",
                        fix=f"write [default.services.{name}] as a table",
                        env=self.config.env,
                    )
                )
                continue
            try:
                service_settings(self.config, str(name) if name != DEFAULTS_KEY else "_")
            except ConfigError as exc:
                problems.extend(p for p in exc.problems if p not in problems)
        if problems:
            raise ConfigError(problems, env=self.config.env)

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
        if self._logging:
            enable_logging(level=self.config.log_level)
        if self.config is current_config() and self._unsubscribe is None:
            self._unsubscribe = subscribe(self._on_reload)
        if self._use_database and self._database is None:
            await self._start_database()
        if self._cache is None:
            self._start_cache()
        if self._shared is None:
            self._start_shared_state()
        orchestrator = self.get_orchestrator()
        report = await orchestrator.start()
        logger.info("resilience initialised ({}): {}", self.config.env, report.overall_status.value)
        return report.to_dict()

    async def _start_database(self) -> None:
        try:
            from .db import Database

            database = Database.from_config(self.config)
            await database.start()
            self._database = database
        except Exception as exc:  # a missing driver or bad URL degrades, never crashes
            self._not_started("database", "database component", exc, "unhealthy", critical=True)

    def _start_cache(self) -> None:
        try:
            from . import _redis

            if self.config.redis.url:
                cache = _redis.enable_redis_cache(
                    self.config.redis.url, timeout=self.config.redis.timeout
                )
            else:
                cache = _redis.get_redis_cache()
            _redis.register_health_checks(self.registry, cache)
            self._cache = cache
        except Exception as exc:
            self._not_started("cache", "cache component", exc, "degraded", critical=False)

    def _start_shared_state(self) -> None:
        """Circuit state in Redis for every breaker when ``resilience.circuit_breaker_shared``."""
        if not (self.config.resilience.circuit_breaker_shared and self.config.redis.url):
            return
        try:
            from . import _shared_state

            self._shared = _shared_state.install_shared_backend(self.config.redis.url)
            _shared_state.register_health_checks(self.registry)
        except Exception as exc:
            self._not_started(
                "shared_state", "shared circuit state", exc, "degraded", critical=False
            )

    def _not_started(
        self, component: str, what: str, exc: Exception, status: str, *, critical: bool
    ) -> None:
        """Log why ``component`` did not start and register it with a fixed ``status``."""
        message = sanitize(f"{type(exc).__name__}: {exc}")
        logger.error(what + " not started: {}", message)
        self.registry.register(
            component, lambda: {"status": status, "detail": message}, critical=critical
        )

    # -- services -----------------------------------------------------------------------

    def _create(self, obj: Any, name: str, role: str, paper: bool | None) -> ResilientService:
        if obj is None:
            raise TypeError(f"create_resilient_{role}() needs the client object to wrap")
        settings = service_settings(self.config, name)
        old = self._services.pop(name, None)
        if old is not None and old in self._context.market_data:
            self._context.market_data.remove(old)
        proxy = ResilientService(
            obj, name, role=role, settings=settings, context=self._context, paper=paper
        )
        self._services[name] = proxy
        if role == "market_data":
            self._context.market_data.append(proxy)
        self.registry.register(name, proxy._health, critical=role == "broker")
        return proxy

    def create_resilient_broker(self, broker: T, name: str, *, paper: bool | None = None) -> T:
        """Wrap every public method of ``broker`` (sync or async) as service ``name``.

        Reads get timeout, breaker, retry and the last good answer from the cache; orders get
        the trading switches, risk limits, ``trading.default_order_timeout`` and the breaker,
        and are retried only when that cannot duplicate them.

        Args:
            broker: the broker client.
            name: the service name (breaker, health component, ``services.<name>`` settings).
            paper: whether ``broker`` trades on paper (default: its ``paper`` attribute or
                ``services.<name>.paper``).
        """
        return cast(T, self._create(broker, name, "broker", paper))

    def create_resilient_market_data(self, market_data: T, name: str) -> T:
        """Wrap every public method of ``market_data`` as service ``name`` (all reads by
        default: timeout, breaker, retry and the last good answer from the cache)."""
        return cast(T, self._create(market_data, name, "market_data", None))

    def register_paper_broker(self, broker: Any, name: str | None = None) -> None:
        """Send orders of service ``name`` (every service when ``None``) to ``broker`` while
        ``features.live_trading_enabled`` is false and ``paper_trading_enabled`` is true."""
        self._context.register_paper_broker(broker, name)

    def record_price(
        self, symbol: str, price: float, *, timestamp: float | None = None, source: str = ""
    ) -> None:
        """Record a price seen on a stream (``timestamp``: when it was observed, wall-clock
        seconds; default now). Orders are valued on the freshest price known, and never on
        one older than ``trading.max_price_age``."""
        self._context.remember_price(symbol, TimedPrice(price, timestamp=timestamp, source=source))

    def service(self, name: str) -> ResilientService:
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
    def services(self) -> dict[str, ResilientService]:
        """Every service created by this factory."""
        return dict(self._services)

    # -- health -------------------------------------------------------------------------

    def get_orchestrator(self) -> HealthOrchestrator:
        """The health orchestrator (``await get_orchestrator().get_system_health()``)."""
        if self._orchestrator is None:
            self._orchestrator = HealthOrchestrator(self.registry, config=self.config)
        return self._orchestrator

    # -- shutdown -----------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop the health monitor, close the database pool, the cache and the rate limiters'
        connections, and unregister this factory's components. Idempotent."""
        if self._orchestrator is not None:
            await self._orchestrator.stop()
        for name, proxy in list(self._services.items()):
            self.registry.unregister(name)
            try:
                await proxy._aclose()
            except Exception as exc:
                logger.warning("closing service {} failed: {}", name, type(exc).__name__)
        if self._database is not None:
            database, self._database = self._database, None
            try:
                await database.close()
            except Exception as exc:
                logger.warning("closing the database failed: {}", type(exc).__name__)
        self.registry.unregister("database")
        if self._shared is not None:
            from ._breaker_storage import set_shared_backend

            shared, self._shared = self._shared, None
            set_shared_backend(None)
            try:
                shared.close()
            except Exception as exc:
                logger.warning("closing the shared circuit state failed: {}", type(exc).__name__)
        self.registry.unregister("shared_state")
        if self._cache is not None:
            cache, self._cache = self._cache, None
            try:
                await cache.close()
            except Exception as exc:
                logger.warning("closing the cache failed: {}", type(exc).__name__)
            if self.config.redis.url:
                from . import _redis
                from ._cache import set_fallback_cache

                _redis.close_workers()
                set_fallback_cache(None)
        self.registry.unregister("cache")
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def __aenter__(self) -> ResilienceFactory:
        await self.initialize_resilience()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown()
