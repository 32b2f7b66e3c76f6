"""Automatic health components: from the policy layer (breakers, fallbacks, bulkheads) and
from the databases started without a registry of their own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from resilient._instrument import published as _published
from resilient._policies.breaker import breakers
from resilient._policies.bulkhead import bulkheads
from resilient._policies.fallback import fallback_status
from resilient.health._model import CheckResult, HealthStatus

__all__ = [
    "breaker_snapshots",
    "bulkhead_snapshots",
    "database_checks",
    "database_pools",
    "fallback_statuses",
    "policy_components",
]

_STATE_STATUS = {
    "closed": HealthStatus.HEALTHY,
    "half-open": HealthStatus.DEGRADED,
    "open": HealthStatus.UNHEALTHY,
}
_RANK = {HealthStatus.HEALTHY: 0, HealthStatus.DEGRADED: 1, HealthStatus.UNHEALTHY: 2}


def breaker_snapshots() -> list[Any]:
    """Every breaker's snapshot (empty if they cannot be read)."""
    try:
        return list(breakers.snapshots())
    except Exception:
        return []


def bulkhead_snapshots() -> list[Any]:
    """Every bulkhead's snapshot."""
    return list(bulkheads.snapshots())


def fallback_statuses() -> Mapping[str, Any]:
    """``resilient.fallback_status()`` (empty if it cannot be read)."""
    try:
        return dict(fallback_status())
    except Exception:
        return {}


def _breaker_result(snap: Any) -> CheckResult:
    state = str(getattr(snap, "state", "closed"))
    status = _STATE_STATUS.get(state, HealthStatus.DEGRADED)
    data: dict[str, Any] = {
        "kind": "circuit_breaker",
        "state": state,
        "failure_count": int(getattr(snap, "failure_count", 0) or 0),
        "total_calls": int(getattr(snap, "total_calls", 0) or 0),
        "success_rate": float(getattr(snap, "success_rate", 1.0) or 0.0),
    }
    rejected = getattr(snap, "rejected_calls", None)
    if rejected is not None:
        data["rejected_calls"] = int(rejected)
    detail = snap.health()[1]  # the breaker's own words (BreakerSnapshot.health)
    return CheckResult(status, detail, data)


def policy_components() -> dict[str, CheckResult]:
    """One component per breaker (closed → healthy, half-open → degraded, open → unhealthy),
    worsened to degraded where the latest call of that name served a fallback."""
    out: dict[str, CheckResult] = {}
    for snap in breaker_snapshots():
        name = str(getattr(snap, "name", ""))
        if name:
            out[name] = _breaker_result(snap)
    for name, fb in fallback_statuses().items():
        if not getattr(fb, "degraded", False):
            continue
        served = int(getattr(fb, "served", 0) or 0)
        detail = f"serving fallbacks ({served} served)"
        current = out.get(name)
        if current is None:
            out[name] = CheckResult(
                HealthStatus.DEGRADED, detail, {"kind": "fallback", "fallbacks_served": served}
            )
        elif _RANK[current.status] < _RANK[HealthStatus.DEGRADED]:
            data = dict(current.data)
            data["fallbacks_served"] = served
            out[name] = CheckResult(HealthStatus.DEGRADED, detail, data)
    for bh in bulkhead_snapshots():  # load control: a refusal in the last minute degrades
        current = out.get(bh.name) or CheckResult(HealthStatus.HEALTHY, "", {"kind": "bulkhead"})
        data = dict(current.data)
        data["bulkhead"] = bh.to_dict()
        status, detail = current.status, current.detail
        if bh.last_rejected_age is not None and bh.last_rejected_age < 60.0:
            status = (
                status if _RANK[status] > _RANK[HealthStatus.DEGRADED] else HealthStatus.DEGRADED
            )
            detail = "; ".join(filter(None, (detail, f"bulkhead refused {bh.rejected} call(s)")))
        out[bh.name] = CheckResult(status, detail, data)
    return out


def database_checks() -> Mapping[str, tuple[Callable[[], Any], bool, float | None]]:
    """The health checks of the started databases that registered on no registry of their
    own (a check source of the process registry)."""
    return _published.published_checks()


def database_pools() -> Mapping[str, Callable[[], Any]]:
    """The pool-usage readers of the started databases (a pool provider of the metrics)."""
    return _published.published_pools()
