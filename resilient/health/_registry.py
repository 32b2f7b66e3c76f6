"""The health registry: named checks run concurrently under per-check timeouts, plus a monitor."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from resilient._core import clock as _clock
from resilient._core.classify import classify
from resilient._core.deadline import seconds_of
from resilient._core.log import logger
from resilient._core.sanitize import sanitize, sanitize_obj
from resilient._core.wrapping import is_async_callable
from resilient.config import current_config
from resilient.config._bounds import DURATION, check_bound
from resilient.health._model import (
    CheckResult,
    ComponentHealth,
    HealthReport,
    HealthStatus,
    aggregate,
    iso_utc,
    parse_status,
)
from resilient.health._sources import database_checks, policy_components

__all__ = [
    "CheckSource",
    "HealthRegistry",
    "Provider",
    "ReportListener",
    "default_registry",
    "is_async_callable",
    "normalise",
]

Provider = Callable[[], Mapping[str, CheckResult]]
SourcedCheck = tuple[Callable[[], Any], bool, float | None]
"""A check a check source offers: ``(check, critical, timeout)``."""
CheckSource = Callable[[], Mapping[str, SourcedCheck]]
ReportListener = Callable[[HealthReport], Any]

DEFAULT_TIMEOUT = 5.0
DEFAULT_INTERVAL = 30.0
# Seconds a check cancelled at its timeout gets to stop before it is reported as still running.
STOP_GRACE = 0.1


class _RaisedInThread(Exception):
    """Carries what a sync check raised in its thread that a future cannot hold
    (``StopIteration``) or that must not reach the loop (``SystemExit``,
    ``KeyboardInterrupt``: in a thread they end only that thread)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__()
        self.original = original


def _duration(value: float, what: str) -> float:
    """``value`` in seconds, > 0 and within the bound of durations (one day): an endless
    timeout would let one check hold every report, an endless interval stop the monitor."""
    seconds = seconds_of(value, what)
    if not seconds > 0:
        raise ValueError(f"{what} must be > 0 seconds")
    return check_bound(what, seconds, DURATION)


def _exception_detail(exc: BaseException) -> tuple[str, dict[str, Any]]:
    if isinstance(exc, _RaisedInThread):
        exc = exc.original
    text = sanitize(exc)
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    data: dict[str, Any] = {"error_type": type(exc).__name__}
    # classification is a nicety here; never let it break a report
    with contextlib.suppress(Exception):
        data["category"] = str(classify(exc))
    return detail, data


def _unreadable(exc: BaseException) -> CheckResult:
    return CheckResult(
        HealthStatus.UNHEALTHY,
        f"check returned a value that cannot be read ({type(exc).__name__}); return a status, "
        "bool, CheckResult or a mapping with 'status' and JSON-like data",
        {"error_type": type(exc).__name__},
    )


def normalise(value: object) -> CheckResult:
    """Turn whatever a check returned into a :class:`CheckResult` (see the module docs)."""
    if value is None:
        return CheckResult(HealthStatus.HEALTHY)
    if isinstance(value, CheckResult):
        return value
    if isinstance(value, bool):
        if value:
            return CheckResult(HealthStatus.HEALTHY)
        return CheckResult(HealthStatus.UNHEALTHY, "check returned False")
    if isinstance(value, str):  # HealthStatus is a str too
        status = parse_status(value)
        if status is not None:
            return CheckResult(status)
        return CheckResult(
            HealthStatus.UNHEALTHY,
            "check returned an unknown status; return healthy, degraded or unhealthy",
        )
    if isinstance(value, Mapping) and "status" in value:
        raw = value["status"]
        status = parse_status(raw) if isinstance(raw, str) else None
        if isinstance(raw, bool):
            status = HealthStatus.HEALTHY if raw else HealthStatus.UNHEALTHY
        if status is None:
            return CheckResult(
                HealthStatus.UNHEALTHY,
                "check returned an unknown status; return healthy, degraded or unhealthy",
            )
        data = {str(k): v for k, v in value.items() if k not in ("status", "detail")}
        return CheckResult(status, str(value.get("detail", "") or ""), data)
    return CheckResult(
        HealthStatus.UNHEALTHY,
        f"check returned unsupported {type(value).__name__}; return a status, bool, "
        "CheckResult or a mapping with 'status'",
    )


def _in_daemon_thread(fn: Callable[[], Any], done: threading.Event) -> asyncio.Future[Any]:
    """Run ``fn`` in a new daemon thread; the returned future gets its result.

    A daemon thread, not the default executor: a hung sync check must never block the loop's
    shutdown (asyncio.run joins its executor) nor the interpreter's exit. ``done`` is set
    when the thread finishes, however long after its caller stopped waiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if future.done():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            result: Any = fn()
            ok = True
        except BaseException as exc:  # handed to the awaiting coroutine
            if isinstance(exc, StopIteration | SystemExit | KeyboardInterrupt):
                exc = _RaisedInThread(exc)
            result, ok = exc, False
        finally:
            done.set()
        # RuntimeError: the loop closed while the check hung, so nobody is waiting
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, ok, result)

    threading.Thread(target=target, name="resilient-health-check", daemon=True).start()
    return future


async def _call_async(fn: Callable[[], Any]) -> Any:
    value = fn()
    if inspect.isawaitable(value):
        value = await value
    return value


async def _call_in_thread(fn: Callable[[], Any], done: threading.Event) -> Any:
    value = await _in_daemon_thread(fn, done)
    if inspect.isawaitable(value):  # ``lambda: ping()`` with an async ping
        value = await value
    return value


def _consume(work: asyncio.Future[Any]) -> None:
    # the outcome of a run nobody waits for any more: retrieved so asyncio does not log it
    if not work.cancelled():
        work.exception()


@dataclass(slots=True)
class _Check:
    name: str
    fn: Callable[[], Any]
    is_async: bool
    critical: bool
    timeout: float | None
    # a run that outlived its timeout and its stop grace: the check is not started again
    # while it still runs (a thread cannot be stopped; a task may ignore its cancellation)
    straggler: asyncio.Future[Any] | None = None
    straggler_done: threading.Event | None = None
    busy_since: float = 0.0

    def still_running(self) -> bool:
        """Whether a run that did not stop at its timeout is still going."""
        if self.straggler_done is not None:  # a sync check's thread
            running = not self.straggler_done.is_set()
        elif self.straggler is not None:  # an async check's task (its loop may be gone)
            task = self.straggler
            running = not task.done() and not task.get_loop().is_closed()
        else:
            return False
        if not running:
            self.straggler = self.straggler_done = None
        return running


class HealthRegistry:
    """Named health checks, their latest results and a periodic monitor.

    Checks are zero-argument callables, sync or async; sync checks run in a daemon thread so a
    slow one never blocks the event loop. Each runs under its own timeout, so a hanging check
    makes its component unhealthy without stalling the report.
    """

    def __init__(self, *, clock: _clock.Clock | None = None) -> None:
        self._clock = clock
        self._checks: dict[str, _Check] = {}
        self._providers: list[Provider] = []
        self._check_sources: list[CheckSource] = []
        self._sourced: dict[str, _Check] = {}
        self._critical_override: dict[str, bool] = {}
        self._failures: dict[str, int] = {}
        self._last: dict[str, ComponentHealth] = {}
        self._listeners: list[ReportListener] = []
        self._last_report: HealthReport | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._lock = threading.Lock()

    # -- registration ---------------------------------------------------------------------
    def register(
        self,
        name: str,
        check: Callable[[], Any],
        *,
        critical: bool = True,
        timeout: float | None = None,
    ) -> None:
        """Register (or replace) the check of component ``name``.

        Args:
            name: the component's name as shown in reports.
            check: a zero-argument callable, sync or async, returning a status, a bool,
                ``None`` (healthy), a :class:`CheckResult` or a mapping with ``"status"``.
            critical: an unhealthy critical component makes the whole system unhealthy.
            timeout: seconds before the check counts as failed
                (default ``resilience.health_check_timeout``).

        Raises:
            TypeError: ``check`` is not callable.
            ValueError: ``name`` is empty or ``timeout`` is not positive.
        """
        if not callable(check):
            raise TypeError(f"health check for {name!r} must be callable, got {type(check)!r}")
        if not name:
            raise ValueError("a health check needs a non-empty component name")
        if timeout is not None:
            timeout = _duration(timeout, f"timeout for health check {name!r}")
        with self._lock:
            self._checks[name] = _Check(name, check, is_async_callable(check), critical, timeout)
            self._failures.pop(name, None)
            self._last.pop(name, None)

    def unregister(self, name: str) -> bool:
        """Forget component ``name``; returns whether it was registered."""
        with self._lock:
            self._failures.pop(name, None)
            self._last.pop(name, None)
            return self._checks.pop(name, None) is not None

    def names(self) -> list[str]:
        """The names of the registered checks and of the check sources' checks (providers'
        components are not included)."""
        names = list(self._checks)
        for source in list(self._check_sources):
            with contextlib.suppress(Exception):  # a failing source is logged by check_all
                names += [n for n in source() if n not in names]
        return names

    def reset(self) -> None:
        """Forget every check, listener, override and result, keeping the providers and check
        sources (so breakers and started databases still contribute). For test isolation."""
        with self._lock:
            self._forget()

    def clear(self) -> None:
        """:meth:`reset`, and forget the providers and check sources too."""
        with self._lock:
            self._forget()
            self._providers.clear()
            self._check_sources.clear()

    def _forget(self) -> None:
        # the state reset() and clear() share; the caller holds the lock
        self._checks.clear()
        self._sourced.clear()
        self._critical_override.clear()
        self._failures.clear()
        self._last.clear()
        self._listeners.clear()
        self._last_report = None

    def add_provider(self, provider: Provider) -> Callable[[], None]:
        """Add a source of dynamic components read at each check (cheap and synchronous).

        Returns a function that removes it.
        """
        with self._lock:
            if provider not in self._providers:
                self._providers.append(provider)

        def remove() -> None:
            with self._lock:
                if provider in self._providers:
                    self._providers.remove(provider)

        return remove

    def add_check_source(self, source: CheckSource) -> Callable[[], None]:
        """Add a source of checks read at each run: ``source()`` maps component names to
        ``(check, critical, timeout)``, run like registered checks (a registered check of
        the same name wins). Returns a function that removes it."""
        with self._lock:
            if source not in self._check_sources:
                self._check_sources.append(source)

        def remove() -> None:
            with self._lock:
                if source in self._check_sources:
                    self._check_sources.remove(source)

        return remove

    def _pull_checks(self) -> list[_Check]:
        """The check sources' checks, each kept as one ``_Check`` while the source offers
        the same check (so a straggling run is not started twice)."""
        offered: dict[str, SourcedCheck] = {}
        for source in list(self._check_sources):
            try:
                offered.update(source())
            except Exception as exc:
                logger.opt(exception=exc).warning("a health source failed: {}", sanitize(exc))
        pulled: list[_Check] = []
        with self._lock:
            for name in [n for n in self._sourced if n not in offered]:
                del self._sourced[name]
            for name, (fn, critical, timeout) in offered.items():
                if name in self._checks:
                    continue
                held = self._sourced.get(name)
                if (
                    held is None
                    or held.fn != fn
                    or (held.critical, held.timeout)
                    != (
                        critical,
                        timeout,
                    )
                ):
                    held = _Check(name, fn, is_async_callable(fn), critical, timeout)
                    self._sourced[name] = held
                pulled.append(held)
        return pulled

    def set_critical(self, name: str, critical: bool = True) -> None:
        """Override whether component ``name`` (registered or provided) is critical."""
        self._critical_override[name] = critical

    def on_report(self, listener: ReportListener) -> Callable[[], None]:
        """Call ``listener(report)`` (sync or async) after every check run; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    @property
    def last_report(self) -> HealthReport | None:
        """The latest report, or ``None`` before the first run."""
        return self._last_report

    def component(self, name: str) -> ComponentHealth | None:
        """The latest result of component ``name``."""
        return self._last.get(name)

    # -- running ---------------------------------------------------------------------------
    def _clock_now(self) -> _clock.Clock:
        return self._clock if self._clock is not None else _clock._current

    def _default_timeout(self) -> float:
        try:
            return float(current_config().resilience.health_check_timeout)
        except Exception:  # configuration errors surface elsewhere; a report must still run
            return DEFAULT_TIMEOUT

    def _record(
        self, name: str, result: CheckResult, critical: bool, latency: float, now: float
    ) -> ComponentHealth:
        critical = self._critical_override.get(name, critical)
        if result.critical is not None:
            critical = result.critical
        try:  # what a report shows must print and serialise, whatever the check returned
            detail = sanitize(result.detail) if result.detail else ""
            data = sanitize_obj(dict(result.data)) if result.data else {}
            json.dumps(data, default=str)
            if not isinstance(detail, str):
                raise TypeError("detail is not text")
        except Exception as exc:
            result = _unreadable(exc)
            detail, data = result.detail, dict(result.data)
        unhealthy = result.status is HealthStatus.UNHEALTHY
        failures = self._failures.get(name, 0) + 1 if unhealthy else 0
        self._failures[name] = failures
        health = ComponentHealth(
            name=name,
            status=result.status,
            critical=critical,
            latency=latency,
            detail=detail,
            last_checked=iso_utc(now),
            consecutive_failures=failures,
            data=data,
        )
        self._last[name] = health
        return health

    async def _run(self, check: _Check, default_timeout: float) -> tuple[CheckResult, float]:
        limit = check.timeout if check.timeout is not None else default_timeout
        started = time.perf_counter()
        timed_out = {"timed_out": True, "timeout_seconds": limit}
        if check.still_running():
            straggler = check.straggler
            if straggler is not None and straggler.get_loop() is asyncio.get_running_loop():
                straggler.cancel()  # ask again; it may stop this time
            return (
                CheckResult(
                    HealthStatus.UNHEALTHY,
                    "did not stop at its timeout: still running from an earlier run "
                    f"({started - check.busy_since:.1f}s), not started again",
                    {**timed_out, "still_running": True},
                ),
                0.0,
            )
        done: threading.Event | None = None
        if check.is_async:
            work: asyncio.Future[Any] = asyncio.ensure_future(_call_async(check.fn))
        else:
            done = threading.Event()
            work = asyncio.ensure_future(_call_in_thread(check.fn, done))
        try:
            await asyncio.wait((work,), timeout=limit)
            if not work.done():
                # Too late, whatever it answers now. Cancel it and give it a short grace to
                # stop; the report never waits longer than timeout + STOP_GRACE.
                if check.is_async:
                    work.cancel()
                await asyncio.wait((work,), timeout=min(STOP_GRACE, limit))
                work.cancel()  # a sync check's late answer is dropped
                stopped = work.done() if done is None else done.is_set()
                if not stopped:
                    check.straggler, check.straggler_done = work, done
                    check.busy_since = started
                work.add_done_callback(_consume)
                detail = f"check timed out after {limit:g}s"
                if stopped:
                    result = CheckResult(HealthStatus.UNHEALTHY, detail, timed_out)
                else:
                    result = CheckResult(
                        HealthStatus.UNHEALTHY,
                        f"{detail} and did not stop at its timeout",
                        {**timed_out, "still_running": True},
                    )
                return result, time.perf_counter() - started
        except asyncio.CancelledError:  # check_all itself was cancelled
            work.cancel()
            raise
        latency = time.perf_counter() - started
        if work.cancelled():
            return CheckResult(HealthStatus.UNHEALTHY, "check was cancelled"), latency
        exc = work.exception()
        if exc is None:
            try:
                return normalise(work.result()), latency
            except Exception as err:  # a mapping whose reads raise, a detail with no bool
                return _unreadable(err), latency
        detail, data = _exception_detail(exc)
        return CheckResult(HealthStatus.UNHEALTHY, detail, data), latency

    async def check_all(self) -> HealthReport:
        """Run every check concurrently (each under its timeout) and return the report."""
        started = time.perf_counter()
        checks = list(self._checks.values())
        if self._check_sources:
            checks += self._pull_checks()
        default_timeout = self._default_timeout()
        outcomes = await asyncio.gather(*(self._run(c, default_timeout) for c in checks))
        now = self._clock_now().time()
        components: dict[str, ComponentHealth] = {}
        with self._lock:
            for check, (result, latency) in zip(checks, outcomes, strict=True):
                current = self._checks.get(check.name) or self._sourced.get(check.name)
                if current is check:  # not replaced meanwhile
                    components[check.name] = self._record(
                        check.name, result, check.critical, latency, now
                    )
            for provider in list(self._providers):
                try:
                    provided = provider()
                except Exception as exc:
                    logger.opt(exception=exc).warning("a health provider failed: {}", sanitize(exc))
                    continue
                for name, result in provided.items():
                    if name not in components:
                        components[name] = self._record(name, result, False, 0.0, now)
        report = HealthReport(
            overall_status=aggregate(components),
            components=components,
            timestamp=iso_utc(now),
            duration=time.perf_counter() - started,
        )
        self._last_report = report
        await self._notify(report)
        return report

    async def _notify(self, report: HealthReport) -> None:
        for listener in list(self._listeners):
            try:
                outcome = listener(report)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                logger.warning(
                    "a health report listener failed: {}: {}", type(exc).__name__, sanitize(exc)
                )

    def check_all_sync(self) -> HealthReport:
        """Run :meth:`check_all` from synchronous code (not from inside a running loop).

        Unlike ``asyncio.run``, never waits for a check that ignores its cancellation: such
        a task is left behind, pending, when the loop closes.
        """
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(self.check_all())
        finally:
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.wait(pending, timeout=STOP_GRACE))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    # -- monitor ---------------------------------------------------------------------------
    @property
    def monitoring(self) -> bool:
        """Whether the monitor task is running."""
        return self._monitor is not None and not self._monitor.done()

    def start_monitor(self, interval: float | None = None) -> asyncio.Task[None]:
        """Start running every check each ``interval`` seconds (default
        ``resilience.health_check_interval``); returns the task. Idempotent."""
        if self._monitor is not None and not self._monitor.done():
            return self._monitor
        if interval is None:
            try:
                interval = float(current_config().resilience.health_check_interval)
            except Exception:
                interval = DEFAULT_INTERVAL
        interval = _duration(interval, "the health monitor interval")
        self._monitor = asyncio.get_running_loop().create_task(
            self._monitor_loop(interval), name="resilient-health-monitor"
        )
        return self._monitor

    async def _monitor_loop(self, interval: float) -> None:
        while True:
            try:
                await self.check_all()
            except Exception as exc:  # one bad cycle must not end monitoring
                logger.error("health cycle failed: {}: {}", type(exc).__name__, sanitize(exc))
            await self._clock_now().asleep(interval)

    async def stop_monitor(self) -> None:
        """Stop the monitor and wait for its task to finish. Idempotent."""
        task, self._monitor = self._monitor, None
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


_default: HealthRegistry | None = None
_default_lock = threading.Lock()


def default_registry() -> HealthRegistry:
    """The process-wide registry (``resilient.health.registry``): the breaker, fallback and
    bulkhead components of the policy layer, and the checks of started databases, included."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                made = HealthRegistry()
                made.add_provider(policy_components)
                made.add_check_source(database_checks)
                _default = made
    return _default
