"""Health: a registry of component checks, a periodic monitor, system health and alerts.

``registry`` is the process-wide :class:`HealthRegistry`; decorated functions (through their
breakers and fallbacks) contribute to it automatically; it pulls the checks of started
standalone databases (:class:`resilient.db.Database`), and the factory registers its backends.
"""

from __future__ import annotations

from resilient import metrics as _metrics
from resilient._instrument.stats import ComponentStats, stats
from resilient.health._alerts import AlertEvent, AlertManager, AlertRule
from resilient.health._model import CheckResult, ComponentHealth, HealthReport, HealthStatus
from resilient.health._orchestrator import HealthOrchestrator
from resilient.health._registry import HealthRegistry
from resilient.health._registry import default_registry as _default_registry
from resilient.health._sources import database_pools as _database_pools

__all__ = [
    "AlertEvent",
    "AlertManager",
    "AlertRule",
    "CheckResult",
    "ComponentHealth",
    "ComponentStats",
    "HealthOrchestrator",
    "HealthRegistry",
    "HealthReport",
    "HealthStatus",
    "registry",
    "stats",
]

registry = _default_registry()
"""The process-wide registry."""
_metrics.set_health_source(lambda: registry.last_report)
_metrics.add_pool_provider(_database_pools)
