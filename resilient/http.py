"""An ASGI health endpoint (extra ``http``, Starlette).

Routes:
    ``/health``        the IETF ``application/health+json`` report; 200 pass/warn, 503 fail.
    ``/health/live``   liveness: 200 while the process serves requests.
    ``/health/ready``  readiness: 200 only when every critical component is healthy, else 503.
    ``/metrics``       the Prometheus text exposition (needs the ``prometheus`` extra).

Serve it with any ASGI server, e.g. ``uvicorn.run(create_app(), host="127.0.0.1", port=8080)``.
"""

from __future__ import annotations

import asyncio as _asyncio
import json as _json
import time as _time
from typing import Any

from resilient._core.extras import missing_extra as _missing_extra

try:
    from starlette.applications import Starlette as _Starlette
    from starlette.requests import Request as _Request
    from starlette.responses import Response as _Response
    from starlette.routing import Route as _Route
except ModuleNotFoundError as _exc:
    raise _missing_extra(_exc, "resilient.http (the health endpoint)") from None

from resilient import metrics as _metrics
from resilient._core.sanitize import sanitize_obj as _sanitize_obj
from resilient._core.version import __version__
from resilient.health import HealthOrchestrator as _HealthOrchestrator
from resilient.health import HealthRegistry as _HealthRegistry
from resilient.health import registry as _default_registry
from resilient.health._model import HealthReport as _HealthReport
from resilient.health._model import HealthStatus as _HealthStatus

__all__ = ["HEALTH_CONTENT_TYPE", "create_app", "health_json"]

HEALTH_CONTENT_TYPE = "application/health+json"
_IETF = {
    _HealthStatus.HEALTHY: "pass",
    _HealthStatus.DEGRADED: "warn",
    _HealthStatus.UNHEALTHY: "fail",
}
_NO_STORE = {"Cache-Control": "no-store"}


def health_json(report: _HealthReport, *, service_id: str = "resilient") -> dict[str, Any]:
    """``report`` in the IETF health-check response format (draft-inadarei-api-health-check)."""
    checks: dict[str, list[dict[str, Any]]] = {}
    for name, comp in report.components.items():
        is_breaker = comp.data.get("kind") == "circuit_breaker"
        entry: dict[str, Any] = {
            "componentId": name,
            "componentType": "circuitBreaker" if is_breaker else "component",
            "status": _IETF[comp.status],
            "time": comp.last_checked,
            "critical": comp.critical,
        }
        if is_breaker:
            key = f"{name}:state"
            entry["observedValue"] = comp.data.get("state")
        else:
            key = f"{name}:responseTime"
            entry["observedValue"] = round(comp.latency * 1000.0, 3)
            entry["observedUnit"] = "ms"
        if comp.detail:
            entry["output"] = comp.detail
        if comp.consecutive_failures:
            entry["consecutiveFailures"] = comp.consecutive_failures
        checks[key] = [entry]
    body: dict[str, Any] = {
        "status": _IETF[report.overall_status],
        "version": __version__.split(".")[0],
        "releaseId": __version__,
        "serviceId": service_id,
        "description": "health of the resilient-managed components",
        "time": report.timestamp,
        "checks": checks,
    }
    clean: dict[str, Any] = _sanitize_obj(body)
    return clean


def _health_response(body: dict[str, Any], status_code: int) -> _Response:
    return _Response(
        _json.dumps(body, default=str),
        status_code=status_code,
        media_type=HEALTH_CONTENT_TYPE,
        headers=_NO_STORE,
    )


def create_app(
    orchestrator: _HealthOrchestrator | None = None,
    *,
    registry: _HealthRegistry | None = None,
    service_id: str = "resilient",
    max_age: float = 1.0,
) -> _Starlette:
    """The health/metrics ASGI app.

    Args:
        orchestrator: runs a full health cycle (alerts included) per ``/health`` request;
            without it the checks of ``registry`` run directly.
        registry: the health registry (default: ``resilient.health.registry``).
        service_id: ``serviceId`` in the health document.
        max_age: seconds a report is reused: concurrent or rapid probes share one run of the
            checks instead of hammering the dependencies (0 runs them for every request).
    """
    if registry is None:
        registry = orchestrator.registry if orchestrator is not None else _default_registry
    checks = registry
    lock = _asyncio.Lock()
    latest: list[tuple[float, _HealthReport]] = []

    async def run_checks() -> _HealthReport:
        async with lock:  # waiters reuse the report of the run they waited for
            if latest and _time.monotonic() - latest[0][0] < max_age:
                return latest[0][1]
            if orchestrator is not None:
                report = await orchestrator.run_cycle()
            else:
                report = await checks.check_all()
            latest[:] = [(_time.monotonic(), report)]
            return report

    async def health(request: _Request) -> _Response:
        report = await run_checks()
        code = 503 if report.overall_status is _HealthStatus.UNHEALTHY else 200
        return _health_response(health_json(report, service_id=service_id), code)

    async def live(request: _Request) -> _Response:
        return _health_response(
            {"status": "pass", "serviceId": service_id, "releaseId": __version__}, 200
        )

    async def ready(request: _Request) -> _Response:
        report = await run_checks()
        not_ready = sorted(
            name
            for name, c in report.components.items()
            if c.critical and c.status is not _HealthStatus.HEALTHY
        )
        body: dict[str, Any] = {
            "status": "pass" if not not_ready else "fail",
            "serviceId": service_id,
            "releaseId": __version__,
            "time": report.timestamp,
        }
        if not_ready:
            body["output"] = "critical components not healthy: " + ", ".join(not_ready)
        return _health_response(_sanitize_obj(body), 200 if not not_ready else 503)

    async def metrics_endpoint(request: _Request) -> _Response:
        try:
            payload = _metrics.generate_latest()
        except ImportError:
            return _Response(
                "prometheus_client is not installed: pip install 'resilient[prometheus]'\n",
                status_code=501,
                media_type="text/plain",
            )
        from prometheus_client import CONTENT_TYPE_LATEST

        return _Response(payload, media_type=CONTENT_TYPE_LATEST, headers=_NO_STORE)

    return _Starlette(
        routes=[
            _Route("/health", health, methods=["GET"]),
            _Route("/health/live", live, methods=["GET"]),
            _Route("/health/ready", ready, methods=["GET"]),
            _Route("/metrics", metrics_endpoint, methods=["GET"]),
        ]
    )
