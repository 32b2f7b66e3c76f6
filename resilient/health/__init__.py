"""Health: a registry of component checks, a periodic monitor, system health and alerts.

``registry`` is the process-wide :class:`HealthRegistry`; decorated functions (through their
breakers and fallbacks), the database and the cache contribute to it automatically.
"""

from __future__ import annotations

from resilient._instrument.stats import ComponentStats, stats
from resilient.health._alerts import AlertEvent, AlertManager, AlertRule
from resilient.health._model import CheckResult, ComponentHealth, HealthReport, HealthStatus
from resilient.health._orchestrator import HealthOrchestrator
from resilient.health._registry import HealthRegistry
from resilient.health._sources import policy_components as _policy_components

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

registry = HealthRegistry()
registry.add_provider(_policy_components)
