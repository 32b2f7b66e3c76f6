"""Prometheus metrics: stable names fed by real breakers, retries and fallbacks; pool and
rate-limit gauges; custom counters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resilient import FakeClock, breaker, fallback, metrics, retry, use_clock
from resilient.errors import record_error
from resilient.health import HealthRegistry, registry

pytestmark = pytest.mark.usefixtures("isolated_registry")


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.generate_latest().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _get(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric: str, /, **labels: str
) -> float:
    return samples[(metric, tuple(sorted(labels.items())))]


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    with use_clock(FakeClock()) as c:
        yield c  # type: ignore[misc]


async def test_breaker_retry_fallback_and_error_metrics(clock: FakeClock) -> None:
    """Breaker state and calls, retries, fallbacks and errors appear under their names."""
    attempts = {"n": 0}

    @retry(max_attempts=3, initial_delay=0.1)
    @breaker("alpaca", failure_threshold=10)
    async def account() -> int:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionResetError("reset")
        return 1

    @fallback(value=0.0, name="polygon")
    async def price() -> float:
        raise TimeoutError("slow")

    assert await account() == 1
    assert await price() == 0.0
    s = _samples()
    assert _get(s, "resilient_circuitbreaker_state", name="alpaca", state="closed") == 1.0
    assert _get(s, "resilient_circuitbreaker_state", name="alpaca", state="open") == 0.0
    assert _get(s, "resilient_circuitbreaker_calls_total", name="alpaca", kind="successful") == 1
    assert _get(s, "resilient_circuitbreaker_calls_total", name="alpaca", kind="failed") == 2
    retries = {k: v for k, v in s.items() if k[0] == "resilient_retries_total"}
    assert sum(retries.values()) == 2
    assert all(dict(k[1])["error_type"] == "ConnectionResetError" for k in retries)
    assert {dict(k[1])["retry_num"] for k in retries} == {"1", "2"}
    assert _get(s, "resilient_fallbacks_total", name="polygon", source="value") == 1
    assert _get(s, "resilient_errors_total", category="timeout") == 1


async def test_open_breaker_state_and_rejections(clock: FakeClock) -> None:
    """An open circuit shows state open and counts not-permitted calls."""

    @breaker("feed", failure_threshold=1, reset_timeout=30)
    async def tick() -> int:
        raise ConnectionRefusedError("down")

    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - the failure, then rejections
            await tick()
    s = _samples()
    assert _get(s, "resilient_circuitbreaker_state", name="feed", state="open") == 1.0
    assert _get(s, "resilient_circuitbreaker_calls_total", name="feed", kind="not_permitted") == 2
    assert _get(s, "resilient_circuitbreaker_transitions_total", name="feed", state="open") == 1


async def test_health_status_gauges_follow_the_latest_report() -> None:
    """Each component exports its latest status and check latency."""
    registry.register("database", lambda: False)
    await registry.check_all()
    s = _samples()
    assert _get(s, "resilient_health_status", component="database", status="unhealthy") == 1.0
    assert _get(s, "resilient_health_status", component="database", status="healthy") == 0.0
    assert ("resilient_health_check_latency_seconds", (("component", "database"),)) in s


async def test_pool_utilisation_from_a_real_database_pool(tmp_path: Path) -> None:
    """The data layer's pool statistics feed the pool gauges (pull at scrape time)."""
    from resilient.db import Database

    db = Database.from_config(url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}")
    await db.start(register_health=False)
    try:
        metrics.add_pool_source("database", db.pool_stats)
        async with db.session() as session:
            from sqlalchemy import text

            await session.execute(text("select 1"))
            s = _samples()
            assert _get(s, "resilient_pool_connections", pool="database", state="in_use") >= 1
            assert _get(s, "resilient_pool_utilization_ratio", pool="database") > 0
        assert _get(_samples(), "resilient_pool_connections", pool="database", state="max") >= 1
    finally:
        metrics.add_pool_source("database", None)
        await db.close()


def test_pushed_pool_rate_limit_and_custom_counters() -> None:
    """Push-style gauges and application counters are exported; bad names are refused."""
    metrics.set_pool_usage("orders_db", in_use=5, idle=5, max_size=20)
    metrics.set_rate_limit_usage("alpaca", used=150, limit=200)
    metrics.inc("api_requests", {"service": "main_broker"})
    metrics.inc("api_requests_total", {"service": "main_broker"}, 2)
    s = _samples()
    assert _get(s, "resilient_pool_utilization_ratio", pool="orders_db") == 0.25
    assert _get(s, "resilient_pool_connections", pool="orders_db", state="idle") == 5
    assert _get(s, "resilient_ratelimit_usage_ratio", name="alpaca") == 0.75
    assert _get(s, "resilient_api_requests_total", service="main_broker") == 3
    with pytest.raises(ValueError, match="invalid metric name"):
        metrics.inc("api-requests")
    with pytest.raises(ValueError, match="invalid label name"):
        metrics.inc("ok", {"bad-label": "x"})
    snap = metrics.snapshot()
    assert snap["pools"]["orders_db"]["utilization"] == 0.25
    assert snap["rate_limits"]["alpaca"]["usage"] == 0.75


def test_errors_recorded_directly_are_counted() -> None:
    """record_error feeds resilient_errors_total by category."""
    record_error(PermissionError("denied"))
    assert _get(_samples(), "resilient_errors_total", category="authentication") == 1


def test_failing_pool_source_does_not_break_a_scrape() -> None:
    """A pool source that raises is skipped."""

    def broken() -> object:
        raise RuntimeError("pool gone")

    metrics.add_pool_source("broken", broken)
    assert ("resilient_pool_utilization_ratio", (("pool", "broken"),)) not in _samples()


def test_register_default_is_idempotent() -> None:
    """The collector can also be exposed on prometheus_client's default registry."""
    from prometheus_client import REGISTRY, generate_latest

    metrics.register_default()
    metrics.register_default()
    metrics.set_rate_limit_usage("x", used=1, limit=2)
    assert b"resilient_ratelimit_usage_ratio" in generate_latest(REGISTRY)


def test_an_unused_registry_is_not_exported() -> None:
    """Only the process registry's last report is exported as health gauges."""
    HealthRegistry().register("private", lambda: True)
    assert not any(
        k[0] == "resilient_health_status" and ("component", "private") in k[1] for k in _samples()
    )


def test_pool_provider_is_read_at_each_scrape() -> None:
    """A pool provider's pools are exported at each scrape; a failing one is skipped."""
    pools = {"orders": lambda: {"checked_out": 3, "size": 5, "max_size": 10}}

    def broken() -> dict[str, object]:
        raise RuntimeError("provider down")

    removers = [metrics.add_pool_provider(lambda: pools), metrics.add_pool_provider(broken)]
    try:
        s = _samples()
        assert _get(s, "resilient_pool_connections", pool="orders", state="in_use") == 3
        assert _get(s, "resilient_pool_connections", pool="orders", state="idle") == 2
        assert _get(s, "resilient_pool_utilization_ratio", pool="orders") == 0.3
        pools.clear()
        assert ("resilient_pool_utilization_ratio", (("pool", "orders"),)) not in _samples()
    finally:
        for remove in removers:
            remove()
