"""The database layer: SQLAlchemy 2 async on asyncpg (PostgreSQL) or aiosqlite (embedded).

Configured from ``database.*``: pool sizes, recycle, pre-ping, pool wait, asyncpg command and
connect timeouts, SSL mode and application name. Slow statements are logged (statement text
only, never parameter values); ``resilience.enable_query_logging`` logs every statement.

Transient connection failures are retried only where that is safe: reads, units of work the
caller marks idempotent, and failures that prove the statement never reached the server::

    db = Database.from_config()
    await db.start()                          # registers the "database" health component
    rows = await db.fetch_all("SELECT id FROM orders WHERE status = :s", {"s": "open"})
    await db.execute("INSERT INTO fills VALUES (:id)", {"id": fid}, idempotent=False)
    await db.run(move_funds, idempotent=True) # fn(AsyncSession) as one retried unit of work
    await db.close()
"""

from __future__ import annotations

import asyncio as _asyncio
import contextlib as _contextlib
import time as _time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager as _asynccontextmanager
from dataclasses import asdict as _asdict
from dataclasses import dataclass as _dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event as _event
from sqlalchemy import text as _text
from sqlalchemy.engine import URL as _URL
from sqlalchemy.engine import make_url as _make_url
from sqlalchemy.ext.asyncio import async_sessionmaker as _async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.sql import Executable as _Executable

from resilient._core import clock as _clock
from resilient._core import deadline as _deadline
from resilient._core.classify import classify as _classify
from resilient._core.extras import missing_extra as _missing_extra
from resilient._core.log import logger as _logger
from resilient._core.sanitize import mask_url as _mask_url
from resilient._core.sanitize import sanitize as _sanitize
from resilient._instrument import published as _published_sources
from resilient._policies.retry import retry as _retry
from resilient.config import current_config as _current_config
from resilient.config import subscribe as _subscribe
from resilient.config._bounds import DURATION as _DURATION

if TYPE_CHECKING:
    from sqlalchemy.engine import Row, RowMapping
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

    from resilient.config import Config

__all__ = ["DB_BUDGET_FACTOR", "Database", "PoolStats", "get_database", "register_health_checks"]

T = TypeVar("T")
_Statement = str | _Executable
_Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None

DB_BUDGET_FACTOR = 2.0
"""A database call (pool wait, pre-ping, reconnects, every attempt and the waits between them)
takes at most ``DB_BUDGET_FACTOR × database.command_timeout``, or the ambient deadline when that
is shorter; then it raises :class:`TimeoutError`. A breaker in front of it therefore opens
within ``failure_threshold × DB_BUDGET_FACTOR × command_timeout``."""

_STATEMENT_LOG_LIMIT = 2000
_START_KEY = "resilient_query_start"


@_dataclass(frozen=True, slots=True)
class PoolStats:
    """Connection pool figures for health and metrics.

    ``size`` is the configured steady pool size, ``checked_out`` the connections in use,
    ``overflow`` the connections opened beyond ``size``, ``max_size`` the hard limit and
    ``utilization`` = checked_out / max_size.
    """

    size: int
    checked_out: int
    overflow: int
    max_size: int
    utilization: float

    def to_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return _asdict(self)


def _as_statement(sql: _Statement) -> _Executable:
    return _text(sql) if isinstance(sql, str) else sql


def _statement_text(statement: str) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= _STATEMENT_LOG_LIMIT else flat[:_STATEMENT_LOG_LIMIT] + " …"


class Database:
    """A pooled async database engine with safe retries, query logging and a health check.

    Build it with :meth:`from_config`; call :meth:`start` before use and :meth:`close` at
    shutdown. ``url`` overrides the URL built from ``database.*`` (the pool, timeout and SSL
    settings still apply).
    """

    def __init__(
        self,
        config: Config,
        *,
        url: str | _URL | None = None,
        name: str = "database",
        application_name: str = "resilient",
    ) -> None:
        self.name = name
        self.application_name = application_name
        self._config = config
        self._url = _make_url(url) if url is not None else self._url_from(config)
        self._engine: AsyncEngine | None = None
        self._sessions: _async_sessionmaker[AsyncSession] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._registered = False
        self._registry: Any = None
        self._component = name
        self._holders = 0
        self._loop: _asyncio.AbstractEventLoop | None = None
        self._apply(config)

    @classmethod
    def from_config(
        cls,
        config: Config | None = None,
        *,
        url: str | _URL | None = None,
        name: str = "database",
        application_name: str = "resilient",
    ) -> Database:
        """A database for ``config`` (default: the process configuration).

        While a database of the same URL, ``name``, ``application_name`` and ``database.*``
        settings is started (the factory's, for example: ``factory.database``), that one is
        returned and shared — one pool, one ``name`` component — and it stays open and in
        health until its last user closes it.
        """
        config = config or _current_config()
        target = _make_url(url) if url is not None else cls._url_from(config)
        key = (target.render_as_string(hide_password=False), name, application_name)
        shared = _started.get(key)
        # a pool belongs to the event loop that started it: share only on that loop
        if (
            shared is not None
            and shared._loop is _asyncio._get_running_loop()
            and shared._config.database == config.database
        ):
            shared._holders += 1
            return shared
        return cls(config, url=url, name=name, application_name=application_name)

    @property
    def component(self) -> str:
        """The health component this database registered (``name``, or ``name-2``… when
        another database of another URL already holds ``name``)."""
        return self._component

    def _key(self) -> tuple[str, str, str]:
        return (self._url.render_as_string(hide_password=False), self.name, self.application_name)

    # -- configuration ------------------------------------------------------------------

    @staticmethod
    def _url_from(config: Config) -> _URL:
        db = config.database
        if db.is_sqlite:
            return _URL.create("sqlite+aiosqlite", database=db.sqlite_path)
        return _URL.create(
            "postgresql+asyncpg",
            username=db.user or None,
            password=db.password or None,
            host=db.host,
            port=db.port,
            database=db.name,
        )

    def _apply(self, config: Config) -> None:
        self._config = config
        self._slow = config.database.slow_query_threshold
        self._log_all = config.resilience.enable_query_logging
        self._budget = DB_BUDGET_FACTOR * config.database.command_timeout
        self._retried = {idem: self._retrying(idempotent=idem) for idem in (True, False)}

    @property
    def is_sqlite(self) -> bool:
        """Whether the backend is the embedded SQLite database."""
        return self._url.get_backend_name() == "sqlite"

    @property
    def url_masked(self) -> str:
        """The URL with its password masked (safe to log or show)."""
        return _mask_url(self._url.render_as_string(hide_password=True))

    def engine_options(self) -> dict[str, Any]:
        """The keyword arguments given to ``create_async_engine`` (no secret in them)."""
        db = self._config.database
        if self.is_sqlite:
            memory = self._url.database in (None, "", ":memory:")
            opts: dict[str, Any] = {
                "connect_args": {"timeout": db.command_timeout},
                "hide_parameters": True,
            }
            if not memory:
                opts.update(
                    pool_size=db.min_pool_size,
                    max_overflow=db.max_pool_size - db.min_pool_size,
                    pool_timeout=db.pool_timeout,
                    pool_pre_ping=db.pool_pre_ping,
                )
            return opts
        ssl: str | bool = False if db.ssl_mode == "disable" else db.ssl_mode
        return {
            "pool_size": db.min_pool_size,
            "max_overflow": db.max_pool_size - db.min_pool_size,
            "pool_recycle": db.max_idle_time,
            "pool_pre_ping": db.pool_pre_ping,
            "pool_timeout": db.pool_timeout,
            # parameter values never reach exception text (which is logged)
            "hide_parameters": True,
            "connect_args": {
                "command_timeout": db.command_timeout,
                "timeout": db.connect_timeout,
                "ssl": ssl,
                "server_settings": {"application_name": self.application_name},
            },
        }

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy engine (created on first use; no connection is opened until needed)."""
        if self._engine is None:
            try:
                self._engine = _create_async_engine(self._url, **self.engine_options())
            except ModuleNotFoundError as exc:  # the driver: asyncpg is the `db` extra
                raise _missing_extra(exc, f"the {self.url_masked} database") from None
            self._sessions = _async_sessionmaker(self._engine, expire_on_commit=False)
            self._install_events(self._engine)
            self._unsubscribe = _subscribe(self._apply)
        return self._engine

    async def start(
        self, *, register_health: bool = True, critical: bool = True, registry: Any = None
    ) -> Database:
        """Create the engine (no connection is opened) and register the health component
        ``name`` on ``registry``; by default it is published (to the health layer) for
        the process health registry to pull. Its pool usage is published too."""
        _ = self.engine
        self._loop = _asyncio.get_running_loop()
        _started[self._key()] = self
        if register_health and not self._registered:
            if registry is None:
                registry = _published
            timeout = self._config.resilience.health_check_timeout
            self._component = _free_component_name(registry, self.name, self)
            registry.register(
                self._component, self.health_check, critical=critical, timeout=timeout
            )
            _owners[(id(registry), self._component)] = self
            self._registry = registry
            self._registered = True
        return self

    def pool_usage(self) -> dict[str, int]:
        """``checked_out``, ``size`` (connections open) and ``max_size`` of the pool."""
        stats = self.pool_stats()
        pool: Any = self._engine.pool if self._engine is not None else None
        idle = int(pool.checkedin()) if pool is not None and hasattr(pool, "checkedin") else 0
        return {
            "checked_out": stats.checked_out,
            "size": stats.checked_out + idle,
            "max_size": stats.max_size,
        }

    async def close(self) -> None:
        """Dispose of the pool and unregister the health component — unless the database is
        shared (see :meth:`from_config`) and another user still holds it."""
        if self._holders > 0:
            self._holders -= 1
            return
        if _started.get(self._key()) is self:
            del _started[self._key()]
        if self._registered:
            key = (id(self._registry), self._component)
            if _owners.get(key) is self:  # never drop a component another database registered
                del _owners[key]
                unregister = getattr(self._registry, "unregister", None)
                if unregister is not None:
                    unregister(self._component)
            self._registered = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._engine is not None:
            engine, self._engine, self._sessions = self._engine, None, None
            await engine.dispose()

    async def __aenter__(self) -> Database:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- query logging ------------------------------------------------------------------

    def _install_events(self, engine: AsyncEngine) -> None:
        sync = engine.sync_engine

        @_event.listens_for(sync, "before_cursor_execute")
        def _before(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
        ) -> None:
            conn.info.setdefault(_START_KEY, []).append(_time.perf_counter())

        @_event.listens_for(sync, "after_cursor_execute")
        def _after(
            conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool
        ) -> None:
            starts = conn.info.get(_START_KEY)
            if not starts:
                return
            elapsed = _time.perf_counter() - starts.pop()
            if elapsed >= self._slow:
                _logger.warning(
                    "slow query on {} ({:.3f}s ≥ {:.3f}s): {}",
                    self.name,
                    elapsed,
                    self._slow,
                    _statement_text(statement),
                )
            elif self._log_all:
                _logger.info(
                    "query on {} ({:.3f}s): {}", self.name, elapsed, _statement_text(statement)
                )

        @_event.listens_for(sync, "handle_error")
        def _error(ctx: Any) -> None:
            if isinstance(ctx.original_exception, TimeoutError):
                # A timed-out connection is suspect (maybe a dead link): discard it instead of
                # sending ROLLBACK into the void on its way back to the pool, and close it hard
                # (a graceful close would wait on the dead link too).
                ctx.is_disconnect = True
                driver = getattr(
                    getattr(ctx.connection, "connection", None), "driver_connection", None
                )
                terminate = getattr(driver, "terminate", None)
                if callable(terminate):
                    with _contextlib.suppress(Exception):
                        terminate()
            conn = ctx.connection
            starts = conn.info.get(_START_KEY) if conn is not None else None
            if starts:
                elapsed = _time.perf_counter() - starts.pop()
                if self._log_all or elapsed >= self._slow:
                    _logger.warning(
                        "query on {} failed after {:.3f}s ({}): {}",
                        self.name,
                        elapsed,
                        type(ctx.original_exception).__name__,
                        _statement_text(ctx.statement or ""),
                    )

    # -- retries ------------------------------------------------------------------------

    def _retrying(
        self, *, idempotent: bool
    ) -> Callable[[Callable[[], Awaitable[Any]], float], Awaitable[Any]]:
        """``attempt(fn, end)`` under the retry policy, with this database's
        ``resilience.retry_*`` settings: only transient failures are retried, and only where
        that is safe (``idempotent``, or a failure that proves nothing was sent); no wait
        starts that the call's budget (or the ambient deadline) cannot cover."""
        res = self._config.resilience
        return _retry(
            max_attempts=res.retry_max_attempts,
            initial_delay=res.retry_initial_delay,
            max_delay=res.retry_max_delay,
            idempotent=idempotent,
            deadline=min(self._budget, _DURATION.high),
            budget=False,
            name=self.name,
        )(self._attempt)

    async def _attempt(self, fn: Callable[[], Awaitable[T]], end: float) -> T:
        return await _bounded(fn(), end - _clock._current.monotonic(), self.name)

    async def _with_retry(self, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        # One budget for the whole call (see DB_BUDGET_FACTOR), the ambient deadline when it
        # is shorter: each attempt gets what is left of it. A call that finally fails is
        # counted by the error tracker (the retry's call-failed event).
        budget = self._budget
        left = _deadline.remaining()
        if left is not None and left < budget:
            budget = max(0.0, left)
        result: T = await self._retried[idempotent](fn, _clock._current.monotonic() + budget)
        return result

    # -- sessions and transactions ------------------------------------------------------

    @_asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """An ``AsyncSession``: committed when the block succeeds, rolled back otherwise."""
        _ = self.engine
        assert self._sessions is not None
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    @_asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """A connection inside ``BEGIN``…``COMMIT`` (rolled back on error; never retried)."""
        async with self.engine.begin() as conn:
            yield conn

    async def run(
        self, fn: Callable[[AsyncSession], Awaitable[T]], *, idempotent: bool = False
    ) -> T:
        """Run ``fn(session)`` as one unit of work and commit it.

        Retried on transient connection failures when ``idempotent`` is true; otherwise only
        when the failure proves nothing reached the server (a refused connection).
        """

        async def once() -> T:
            async with self.session() as session:
                return await fn(session)

        return await self._with_retry(once, idempotent=idempotent)

    # -- one-statement helpers ----------------------------------------------------------

    async def fetch_all(self, sql: _Statement, params: _Params = None) -> list[RowMapping]:
        """Rows of a read as mappings (retried on transient failures)."""

        async def once() -> list[RowMapping]:
            async with self.engine.connect() as conn:
                result = await conn.execute(_as_statement(sql), params)
                return list(result.mappings().all())

        return await self._with_retry(once, idempotent=True)

    async def fetch_one(self, sql: _Statement, params: _Params = None) -> RowMapping | None:
        """The first row of a read, or ``None`` (retried on transient failures)."""

        async def once() -> RowMapping | None:
            async with self.engine.connect() as conn:
                result = await conn.execute(_as_statement(sql), params)
                return result.mappings().first()

        return await self._with_retry(once, idempotent=True)

    async def scalar(self, sql: _Statement, params: Mapping[str, Any] | None = None) -> Any:
        """The first column of the first row of a read (retried on transient failures)."""

        async def once() -> Any:
            async with self.engine.connect() as conn:
                return await conn.scalar(_as_statement(sql), params)

        return await self._with_retry(once, idempotent=True)

    async def execute(
        self, sql: _Statement, params: _Params = None, *, idempotent: bool = False
    ) -> int:
        """Run a write in its own transaction; returns the affected row count.

        Retried on transient failures only when ``idempotent`` (for example an upsert keyed by
        a unique id) or when the failure proves the statement was never sent.
        """

        async def once() -> int:
            async with self.engine.begin() as conn:
                result = await conn.execute(_as_statement(sql), params)
                return int(getattr(result, "rowcount", -1))

        return await self._with_retry(once, idempotent=idempotent)

    async def rows(self, sql: _Statement, params: _Params = None) -> Sequence[Row[Any]]:
        """Rows of a read as SQLAlchemy ``Row`` tuples (retried on transient failures)."""

        async def once() -> Sequence[Row[Any]]:
            async with self.engine.connect() as conn:
                result = await conn.execute(_as_statement(sql), params)
                return result.all()

        return await self._with_retry(once, idempotent=True)

    # -- health and metrics -------------------------------------------------------------

    def pool_stats(self) -> PoolStats:
        """Current pool figures (zeros before the engine exists)."""
        db = self._config.database
        max_size = db.max_pool_size
        if self._engine is None:
            return PoolStats(0, 0, 0, max_size, 0.0)
        pool: Any = self._engine.pool
        size = int(pool.size()) if hasattr(pool, "size") else 1
        checked_out = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
        overflow = max(0, int(pool.overflow())) if hasattr(pool, "overflow") else 0
        if hasattr(pool, "_max_overflow"):
            max_size = size + max(0, int(pool._max_overflow))
        util = checked_out / max_size if max_size > 0 else 0.0
        return PoolStats(size, checked_out, overflow, max_size, round(util, 4))

    async def health_check(self, within: float | None = None) -> dict[str, Any]:
        """``SELECT 1`` within ``within`` seconds (default: the health-check timeout, capped by the
        command timeout). Unhealthy when it fails, degraded when slow or the pool is nearly
        exhausted. Never raises."""
        res, db = self._config.resilience, self._config.database
        limit = within if within is not None else min(res.health_check_timeout, db.command_timeout)
        backend = "sqlite" if self.is_sqlite else "postgresql"
        started = _time.perf_counter()
        try:
            async with _asyncio.timeout(limit):
                async with self.engine.connect() as conn:
                    await conn.execute(_text("SELECT 1"))
        except Exception as exc:
            latency = _time.perf_counter() - started
            return {
                "status": "unhealthy",
                "detail": f"{type(exc).__name__}: {_sanitize(exc)}"[:500]
                if str(exc)
                else f"{type(exc).__name__} after {latency:.3f}s",
                "backend": backend,
                "latency_ms": round(latency * 1000, 2),
                "category": str(_classify(exc)),
                "pool": self.pool_stats().to_dict(),
            }
        latency = _time.perf_counter() - started
        stats = self.pool_stats()
        status, detail = "healthy", ""
        if latency >= self._slow:
            status, detail = "degraded", f"SELECT 1 took {latency:.3f}s"
        elif stats.utilization >= 0.9:
            status, detail = "degraded", f"pool {stats.utilization:.0%} in use"
        return {
            "status": status,
            "detail": detail,
            "backend": backend,
            "latency_ms": round(latency * 1000, 2),
            "pool": stats.to_dict(),
        }


async def _bounded(work: Awaitable[T], seconds: float, name: str) -> T:
    """``await work``, but at most ``seconds``: then it is cancelled and left to clean up
    on its own (a cancelled query on a dead link can take seconds to unwind), and the caller
    gets :class:`TimeoutError` at once."""
    if seconds <= 0:  # nothing may start once the budget is spent
        if _asyncio.iscoroutine(work):
            work.close()
        raise TimeoutError(f"{name}: the call's time budget (or the deadline) is spent")
    task = _asyncio.ensure_future(work)
    try:
        done, _ = await _asyncio.wait((task,), timeout=seconds)
    except _asyncio.CancelledError:
        task.cancel()
        task.add_done_callback(_abandoned)
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(_abandoned)
    raise TimeoutError(
        f"{name}: the call ran out of its time budget "
        f"({DB_BUDGET_FACTOR} × database.command_timeout, or the deadline)"
    )


def _abandoned(task: _asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned attempt's error is not "never retrieved"


_started: dict[tuple[str, str, str], Database] = {}


class _Published:
    """The health components of databases started without a registry: the health package
    pulls them (to the health layer) rather than a database pushing into it."""

    def __init__(self) -> None:
        self._checks: dict[str, tuple[Callable[[], Any], bool, float | None]] = {}

    def names(self) -> list[str]:
        return list(self._checks)

    def register(
        self, name: str, check: Callable[[], Any], *, critical: bool, timeout: float | None
    ) -> None:
        self._checks[name] = (check, critical, timeout)

    def unregister(self, name: str) -> bool:
        return self._checks.pop(name, None) is not None


_published = _Published()


def _published_checks() -> dict[str, tuple[Callable[[], Any], bool, float | None]]:
    """The health checks of started databases registered on no registry of their own, as
    ``component -> (check, critical, timeout)``."""
    return dict(_published._checks)


def _started_pools() -> dict[str, Callable[[], dict[str, int]]]:
    """The pool-usage readers of the started databases, by database name."""
    return {db.name: db.pool_usage for db in list(_started.values())}


_published_sources.add_check_source(_published_checks)
_published_sources.add_pool_source(_started_pools)


"""Started databases by (URL, name, application name): :meth:`Database.from_config` shares
them."""
_owners: dict[tuple[int, str], Database] = {}
"""Which database registered each (registry, component name)."""


def _free_component_name(registry: Any, name: str, db: Database) -> str:
    """``name``, or ``name-2``, ``name-3``… when another started database (of another URL)
    holds ``name`` in ``registry``: a second database never takes over the first's component."""
    taken = set(registry.names()) if callable(getattr(registry, "names", None)) else set()
    candidate, n = name, 1
    while True:
        if registry is _published:
            # published components land in the process registry, which may hold the
            # databases registered on it explicitly: a name any other database holds is taken
            owners = [o for (_, comp), o in _owners.items() if comp == candidate]
            if all(o is db or not o._registered for o in owners):
                return candidate
        else:
            # a published name in ``taken``: the registry is the process one, pulling them
            owner = _owners.get((id(registry), candidate)) or _owners.get(
                (id(_published), candidate)
            )
            if candidate not in taken or owner is None or owner is db or not owner._registered:
                return candidate
        n += 1
        candidate = f"{name}-{n}"


_default: Database | None = None


def get_database() -> Database:
    """The process-wide database built from the current configuration (not started)."""
    global _default
    if _default is None:
        _default = Database.from_config()
    return _default


def register_health_checks(registry: Any, db: Database | None = None) -> None:
    """Register the (critical) ``database`` component of ``db`` (default: the process one)."""
    target = db or get_database()
    timeout = target._config.resilience.health_check_timeout
    registry.register(target.name, target.health_check, critical=True, timeout=timeout)
