"""Health data: statuses, what a check returns, one component's result and a whole report."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from resilient._core.sanitize import sanitize, sanitize_obj

__all__ = [
    "CheckResult",
    "ComponentHealth",
    "HealthReport",
    "HealthStatus",
    "aggregate",
    "iso_utc",
]


class HealthStatus(StrEnum):
    """A component's or the whole system's health."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_ALIASES: dict[str, HealthStatus] = {
    "healthy": HealthStatus.HEALTHY,
    "ok": HealthStatus.HEALTHY,
    "up": HealthStatus.HEALTHY,
    "pass": HealthStatus.HEALTHY,
    "degraded": HealthStatus.DEGRADED,
    "warn": HealthStatus.DEGRADED,
    "unhealthy": HealthStatus.UNHEALTHY,
    "down": HealthStatus.UNHEALTHY,
    "fail": HealthStatus.UNHEALTHY,
}


def parse_status(value: str) -> HealthStatus | None:
    """``"healthy"``/``"ok"``/``"up"``/``"pass"``, ``"degraded"``/``"warn"``,
    ``"unhealthy"``/``"down"``/``"fail"`` (any case) → a status; anything else → ``None``."""
    return _ALIASES.get(value.strip().lower())


def iso_utc(epoch_seconds: float) -> str:
    """Wall-clock seconds → ISO-8601 UTC text (``2026-01-02T03:04:05.678901+00:00``)."""
    return _dt.datetime.fromtimestamp(epoch_seconds, tz=_dt.UTC).isoformat()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What a health check may return when a bare status or bool says too little.

    Args:
        status: the component's status.
        detail: one line for operators (sanitized before it is shown).
        data: JSON-like extra facts (sanitized; secret-named keys masked).
        critical: overrides the registration's criticality when not ``None``.
    """

    status: HealthStatus
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    critical: bool | None = None


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    """The latest result of one component."""

    name: str
    status: HealthStatus
    critical: bool
    latency: float
    detail: str
    last_checked: str
    consecutive_failures: int
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, sanitized dict."""
        out: dict[str, Any] = {
            "status": self.status.value,
            "critical": self.critical,
            "latency_ms": round(self.latency * 1000.0, 3),
            "detail": sanitize(self.detail),
            "last_checked": self.last_checked,
            "consecutive_failures": self.consecutive_failures,
        }
        if self.data:
            out["data"] = sanitize_obj(dict(self.data))
        return out


def aggregate(components: Mapping[str, ComponentHealth]) -> HealthStatus:
    """The overall status: a critical component unhealthy → unhealthy; anything degraded or a
    non-critical component unhealthy → degraded; otherwise (or with no components) healthy."""
    overall = HealthStatus.HEALTHY
    for c in components.values():
        if c.status is HealthStatus.UNHEALTHY:
            if c.critical:
                return HealthStatus.UNHEALTHY
            overall = HealthStatus.DEGRADED
        elif c.status is HealthStatus.DEGRADED:
            overall = HealthStatus.DEGRADED
    return overall


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The result of one :meth:`HealthRegistry.check_all` run."""

    overall_status: HealthStatus
    components: Mapping[str, ComponentHealth]
    timestamp: str
    duration: float = 0.0

    @property
    def ready(self) -> bool:
        """Every critical component is healthy (Kubernetes readiness)."""
        return all(c.status is HealthStatus.HEALTHY for c in self.components.values() if c.critical)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable, sanitized dict (``timestamp`` is ISO-8601 UTC)."""
        return {
            "overall_status": self.overall_status.value,
            "components": {sanitize(n): c.to_dict() for n, c in self.components.items()},
            "timestamp": self.timestamp,
            "duration_ms": round(self.duration * 1000.0, 3),
        }
