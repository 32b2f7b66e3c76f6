"""Health: a registry of component checks, a periodic monitor, system health and alerts.

``registry`` is the process-wide :class:`HealthRegistry`; decorated functions (through their
breakers and fallbacks), the database and the cache contribute to it automatically.
"""

from __future__ import annotations

from .._alerts import AlertEvent, AlertManager, AlertRule
from ._model import CheckResult, ComponentHealth, HealthReport, HealthStatus
from ._orchestrator import HealthOrchestrator
from ._registry import HealthRegistry
from ._sources import policy_components as _policy_components
from ._stats import ComponentStats, stats

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
