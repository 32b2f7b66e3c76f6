"""The ASGI health app called in process (httpx's ASGI transport): the registry an
orchestrator brings, reports reused within ``max_age``, and ``/metrics`` without Prometheus."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from resilient.health import CheckResult, HealthOrchestrator, HealthRegistry, HealthStatus
from resilient.http import HEALTH_CONTENT_TYPE, create_app, health_json

Client = Callable[[Any], httpx.AsyncClient]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    made: list[httpx.AsyncClient] = []

    def make(app: Any) -> httpx.AsyncClient:
        c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app")
        made.append(c)
        return c

    yield make
    for c in made:
        await c.aclose()


async def test_orchestrator_brings_its_registry(client: Client) -> None:
    """Without ``registry`` the app reads the orchestrator's; ``/ready`` names what is down."""
    registry = HealthRegistry()
    registry.register("db", lambda: CheckResult(HealthStatus.UNHEALTHY, "refused"))
    registry.register("cache", lambda: CheckResult(HealthStatus.HEALTHY), critical=False)
    app = create_app(HealthOrchestrator(registry), service_id="svc", max_age=0)
    http = client(app)
    health = await http.get("/health")
    assert health.status_code == 503
    assert health.headers["content-type"] == HEALTH_CONTENT_TYPE
    assert health.headers["cache-control"] == "no-store"
    body = health.json()
    assert body["serviceId"] == "svc" and body["status"] == "fail"
    assert body["checks"]["db:responseTime"][0]["output"] == "refused"
    assert body["checks"]["db:responseTime"][0]["consecutiveFailures"] == 1
    assert body["checks"]["cache:responseTime"][0]["critical"] is False
    ready = await http.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["output"] == "critical components not healthy: db"
    live = await http.get("/health/live")
    assert live.status_code == 200 and live.json()["status"] == "pass"


async def test_report_is_reused_within_max_age(client: Client) -> None:
    calls = 0

    def check() -> CheckResult:
        nonlocal calls
        calls += 1
        return CheckResult(HealthStatus.DEGRADED, "slow")

    registry = HealthRegistry()
    registry.register("feed", check)
    http = client(create_app(registry=registry, max_age=60.0))
    for _ in range(3):
        response = await http.get("/health")
        assert response.status_code == 200
        assert response.json()["status"] == "warn"
    assert (await http.get("/health/ready")).status_code == 503  # degraded is not ready
    assert calls == 1

    fresh = client(create_app(registry=registry, max_age=0))
    await fresh.get("/health")
    await fresh.get("/health")
    assert calls == 3


async def test_metrics_without_prometheus_is_501(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    http = client(create_app(registry=HealthRegistry()))
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    response = await http.get("/metrics")
    assert response.status_code == 501
    assert "pip install 'resilient[prometheus]'" in response.text


async def test_health_json_of_an_empty_registry_passes() -> None:
    report = await HealthRegistry().check_all()
    body = health_json(report, service_id="empty")
    assert body["status"] == "pass" and body["checks"] == {}
    assert body["serviceId"] == "empty"
    assert body["releaseId"].split(".")[0] == body["version"]
