"""The health endpoint served by a real uvicorn server on 127.0.0.1, queried with httpx."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import uvicorn

from resilient._core.sanitize import register_secret
from resilient.health import CheckResult, HealthOrchestrator, HealthRegistry, HealthStatus
from resilient.http import create_app

pytestmark = pytest.mark.usefixtures("isolated_registry")

Serve = Callable[..., Any]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on a free port; yields a function returning a client for it."""
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    clients: list[httpx.AsyncClient] = []

    async def start(app: Any) -> httpx.AsyncClient:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", lifespan="off", ws="none"
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        servers.append((server, task))
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.aclose()
    for server, task in servers:
        server.should_exit = True
        await asyncio.wait_for(task, 5.0)


async def test_health_is_ietf_health_json_with_pass_warn_fail(serve: Serve) -> None:
    """/health answers application/health+json: 200 pass, 200 warn, 503 fail."""
    state = {"db": "healthy", "cache": "healthy"}
    reg = HealthRegistry()
    reg.register("database", lambda: state["db"], critical=True)
    reg.register("cache", lambda: state["cache"], critical=False)
    client = await serve(create_app(registry=reg, max_age=0))

    response = await client.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/health+json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["status"] == "pass"
    assert body["releaseId"]
    db = body["checks"]["database:responseTime"][0]
    assert db["componentId"] == "database"
    assert db["status"] == "pass"
    assert db["observedUnit"] == "ms"
    assert db["time"].endswith("+00:00")

    state["cache"] = "unhealthy"
    response = await client.get("/health")
    assert (response.status_code, response.json()["status"]) == (200, "warn")

    state["db"] = "unhealthy"
    response = await client.get("/health")
    assert (response.status_code, response.json()["status"]) == (503, "fail")
    assert response.headers["content-type"] == "application/health+json"


async def test_live_and_ready(serve: Serve) -> None:
    """Liveness is always 200; readiness is 200 only when every critical component is healthy."""
    state = {"db": "healthy", "cache": "unhealthy"}
    reg = HealthRegistry()
    reg.register("database", lambda: state["db"], critical=True)
    reg.register("cache", lambda: state["cache"], critical=False)
    client = await serve(create_app(registry=reg, max_age=0))

    live = await client.get("/health/live")
    assert (live.status_code, live.json()["status"]) == (200, "pass")
    assert live.headers["content-type"] == "application/health+json"

    ready = await client.get("/health/ready")
    assert (ready.status_code, ready.json()["status"]) == (200, "pass")  # cache is non-critical

    state["db"] = "degraded"
    ready = await client.get("/health/ready")
    assert ready.status_code == 503
    assert ready.json()["output"] == "critical components not healthy: database"
    assert (await client.get("/health/live")).status_code == 200


async def test_metrics_endpoint_is_prometheus_text(serve: Serve) -> None:
    """/metrics serves the Prometheus exposition with its content type."""
    reg = HealthRegistry()
    client = await serve(create_app(registry=reg, max_age=0))
    from resilient import metrics

    metrics.set_rate_limit_usage("alpaca", used=1, limit=4)
    response = await client.get("/metrics")
    assert response.status_code == 200
    from prometheus_client import CONTENT_TYPE_LATEST

    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    assert 'resilient_ratelimit_usage_ratio{name="alpaca"} 0.25' in response.text


async def test_breakers_show_as_circuit_breaker_checks(serve: Serve) -> None:
    """With an orchestrator, breaker components appear with their state."""
    from resilient import breaker

    @breaker("alpaca", failure_threshold=1, reset_timeout=60)
    async def account() -> int:
        raise ConnectionRefusedError("down")

    with pytest.raises(ConnectionRefusedError):
        await account()
    client = await serve(create_app(HealthOrchestrator(), max_age=0))
    body = (await client.get("/health")).json()
    check = body["checks"]["alpaca:state"][0]
    assert (check["componentType"], check["observedValue"], check["status"]) == (
        "circuitBreaker",
        "open",
        "fail",
    )
    assert body["status"] == "warn"  # a breaker is not critical by default


async def test_secrets_never_leave_through_the_endpoint(serve: Serve) -> None:
    """Registered secrets and DSN passwords in details are masked in every response."""
    secret = "pw-Zq81-very-secret"
    register_secret(secret)
    reg = HealthRegistry()
    reg.register(
        "database",
        lambda: CheckResult(HealthStatus.UNHEALTHY, f"postgresql://app:{secret}@db/x refused"),
    )

    def raising() -> None:
        raise ConnectionError(f"auth token={secret}")

    reg.register("broker", raising, critical=False)
    client = await serve(create_app(registry=reg, max_age=0))
    for path in ("/health", "/health/ready", "/health/live", "/metrics"):
        response = await client.get(path)
        assert secret not in response.text, path


async def test_unknown_paths_and_methods(serve: Serve) -> None:
    """Unknown paths are 404; only GET is allowed on the health routes."""
    client = await serve(create_app(registry=HealthRegistry()))
    assert (await client.get("/nope")).status_code == 404
    assert (await client.post("/health")).status_code == 405


async def test_rapid_and_concurrent_probes_share_one_run_of_the_checks(serve: Serve) -> None:
    """Within max_age, probes reuse the report instead of re-running every check."""
    runs = {"n": 0}

    async def check() -> bool:
        runs["n"] += 1
        await asyncio.sleep(0.05)
        return True

    reg = HealthRegistry()
    reg.register("database", check)
    client = await serve(create_app(registry=reg, max_age=30.0))
    responses = await asyncio.gather(*(client.get("/health") for _ in range(5)))
    responses.append(await client.get("/health/ready"))
    assert [r.status_code for r in responses] == [200] * 6
    assert runs["n"] == 1
