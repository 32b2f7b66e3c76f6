"""The orchestrator: one health cycle (checks, breaker and error sampling, alerts) and the
system-health dict of the integration API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from resilient._core import clock as _clock
from resilient._core.exceptions import ConfigError
from resilient._core.log import logger
from resilient._core.sanitize import sanitize, sanitize_obj
from resilient._instrument.stats import all_stats, stats
from resilient._instrument.tracker import ErrorTracker
from resilient._instrument.tracker import tracker as default_tracker
from resilient.config import Config, current_config, subscribe
from resilient.health._alerts import DEFAULT_RULES, AlertManager, rules_from_config
from resilient.health._model import HealthReport, iso_utc
from resilient.health._registry import HealthRegistry, default_registry
from resilient.health._sources import breaker_snapshots

__all__ = ["HealthOrchestrator"]


def _breaker_dict(snap: Any) -> dict[str, Any]:
    opened = getattr(snap, "opened_at", None)
    recovery = getattr(snap, "last_recovery_seconds", None)
    category = getattr(snap, "last_failure_category", None)
    return {
        "state": str(getattr(snap, "state", "closed")),
        "success_rate": float(getattr(snap, "success_rate", 1.0)),
        "failure_count": int(getattr(snap, "failure_count", 0) or 0),
        "total_calls": int(getattr(snap, "total_calls", 0) or 0),
        "rejected_calls": int(getattr(snap, "rejected_calls", 0) or 0),
        "opened_at": iso_utc(float(opened)) if isinstance(opened, int | float) else None,
        "last_failure_category": None if category is None else str(category),
        "last_recovery_seconds": None if recovery is None else float(recovery),
    }


class HealthOrchestrator:
    """Runs health cycles and reports the system's health (``get_system_health()``).

    Args:
        registry: the health registry (default: ``resilient.health.registry``).
        tracker: the error tracker (default: ``resilient.errors.tracker``).
        alerts: the alert manager (default: rules from the ``alerts`` settings section).
        clock: the clock for intervals and alert delays (default: the current clock).
        config: the configuration (default: ``current_config()``).

    Raises:
        ConfigError: the ``alerts`` section is invalid.
    """

    def __init__(
        self,
        registry: HealthRegistry | None = None,
        *,
        tracker: ErrorTracker | None = None,
        alerts: AlertManager | None = None,
        clock: _clock.Clock | None = None,
        config: Config | None = None,
    ) -> None:
        process_config = current_config()
        # only the process configuration follows reloads; a standalone one stays as given
        self._follows_reloads = config is None or config is process_config
        if config is None:
            config = process_config
        if registry is None:
            registry = default_registry()
        if tracker is None:
            tracker = default_tracker
        self.config = config
        self.registry = registry
        self.tracker = tracker
        self.alerts = (
            alerts if alerts is not None else AlertManager.from_config(config, clock=clock)
        )
        self.tracker.window = float(self.alerts.options.get("error_rate_window", 60.0))
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._reload_rules = alerts is None
        self._unsubscribe: Callable[[], None] | None = None

    # -- cycles ----------------------------------------------------------------------------
    def _now(self) -> _clock.Clock:
        return self._clock if self._clock is not None else _clock._current

    async def run_cycle(self) -> HealthReport:
        """Run every check once, sample breakers and the error rate, evaluate the alerts."""
        report = await self.registry.check_all()
        snaps = breaker_snapshots()
        for snap in snaps:
            stats(str(snap.name)).record_breaker(
                int(getattr(snap, "total_calls", 0) or 0),
                int(getattr(snap, "failure_count", 0) or 0),
                int(getattr(snap, "rejected_calls", 0) or 0),
            )
        registered = set(self.registry.names())
        for name, comp in report.components.items():
            component_stats = stats(name)  # every component gets a metrics entry
            if name in registered:
                component_stats.record_check(comp.status.value != "unhealthy", comp.latency)
        self.tracker.sample()
        values: dict[str, dict[str, Any]] = {
            "circuit_breaker_state": {str(s.name): str(s.state) for s in snaps},
            "health_status": {"system": report.overall_status.value},
            "error_rate": {"system": self.tracker.error_rate()},
            "component_health": {n: c.status.value for n, c in report.components.items()},
        }
        await self.alerts.aevaluate(values)
        return report

    def _on_reload(self, config: Config) -> None:
        """A configuration reload: new interval and, unless rules were passed in, new alert
        rules. An invalid ``alerts`` section is logged and the running rules are kept."""
        self.config = config
        if not self._reload_rules:
            return
        try:
            rules, options = rules_from_config(
                config.section("alerts") or DEFAULT_RULES, env=config.env
            )
        except ConfigError as exc:
            logger.error("alert rules not reloaded, keeping the running ones: {}", sanitize(exc))
            return
        self.alerts.replace_rules(rules, options)
        self.tracker.window = float(options.get("error_rate_window", self.tracker.window))

    async def start(self) -> HealthReport:
        """Run every check once (so every component has a status), then start the periodic
        monitor at ``resilience.health_check_interval`` unless health checks are disabled.

        While running, configuration reloads update the interval and the alert rules.
        """
        report = await self.run_cycle()
        if self._unsubscribe is None and self._follows_reloads:
            self._unsubscribe = subscribe(self._on_reload)
        if self.config.resilience.health_check_enabled and not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="resilient-health-orchestrator"
            )
        return report

    @property
    def running(self) -> bool:
        """Whether the periodic monitor runs."""
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while True:
            # read each time: a configuration reload may change it
            await self._now().asleep(float(self.config.resilience.health_check_interval))
            try:
                await self.run_cycle()
            except Exception as exc:  # one bad cycle must not end monitoring
                logger.error("health cycle failed: {}: {}", type(exc).__name__, sanitize(exc))

    async def stop(self) -> None:
        """Stop the monitor and wait for its task. Idempotent."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def __aenter__(self) -> HealthOrchestrator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- reports ---------------------------------------------------------------------------
    def component_metrics(self) -> dict[str, dict[str, Any]]:
        """Per component over the rolling window: availability, error rate, p95 latency of
        calls and of cached (fallback) reads, and the last recovery (open → closed) duration."""
        recoveries: dict[str, float | None] = {}
        for snap in breaker_snapshots():
            value = getattr(snap, "last_recovery_seconds", None)
            recoveries[str(snap.name)] = None if value is None else float(value)
        out: dict[str, dict[str, Any]] = {}
        for name, component_stats in sorted(all_stats().items()):
            out[name] = component_stats.summary(recoveries.get(name))
        return out

    async def get_system_health(self) -> dict[str, Any]:
        """Run a health cycle and return the system's health as JSON-serialisable data.

        Keys: ``overall_status``, ``components``, ``circuit_breakers``, ``error_handling``,
        ``metrics``, ``alerts`` and ``timestamp`` (ISO-8601 UTC). All text is sanitized.
        """
        report = await self.run_cycle()
        return self.build_dict(report)

    def build_dict(self, report: HealthReport) -> dict[str, Any]:
        """The system-health dict for ``report`` (without running checks)."""
        # Free text is sanitized where it is produced (component details and data in
        # ``to_dict``, error records, alert messages); only names are left to mask here, which
        # keeps the report cheap with many components.
        errors: dict[str, Any] = sanitize_obj(self.tracker.snapshot())
        return {
            "overall_status": report.overall_status.value,
            "components": {sanitize(n): c.to_dict() for n, c in report.components.items()},
            "circuit_breakers": {
                sanitize(str(s.name)): _breaker_dict(s) for s in breaker_snapshots()
            },
            "error_handling": errors,
            "metrics": {sanitize(n): m for n, m in self.component_metrics().items()},
            "alerts": [sanitize_obj(event.to_dict()) for event in self.alerts.active()],
            "timestamp": report.timestamp,
        }
