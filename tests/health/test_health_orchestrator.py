"""System health: the DESIGN.md dict from real breakers, fallbacks and checks; component
metrics over the rolling window; start/stop; the p95 budget with 50 components."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resilient import FakeClock, breaker, fallback, use_clock
from resilient._core.sanitize import register_secret
from resilient._instrument.stats import p95
from resilient.health import CheckResult, HealthOrchestrator, HealthRegistry, HealthStatus, registry

pytestmark = pytest.mark.usefixtures("isolated_registry")


async def _fail(fn: object, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Exception):  # noqa: B017 - any failure counts for the breaker
            await fn()  # type: ignore[operator]


async def test_system_health_has_the_design_keys_and_is_json() -> None:
    """overall_status, components, circuit_breakers, error_handling and timestamp, as JSON."""

    @breaker("alpaca", failure_threshold=2, reset_timeout=60)
    async def account() -> dict[str, int]:
        raise ConnectionResetError("reset by peer")

    @fallback(value=101.5, name="polygon")
    async def price() -> float:
        raise TimeoutError("feed slow")

    registry.register("database", lambda: True, critical=True)
    await _fail(account, 3)  # two failures open it, the third is rejected
    assert await price() == 101.5
    health = await HealthOrchestrator().get_system_health()
    json.dumps(health)
    assert set(health) >= {
        "overall_status",
        "components",
        "circuit_breakers",
        "error_handling",
        "timestamp",
    }
    assert health["overall_status"] == "degraded"  # breakers are non-critical by default
    assert health["components"]["database"]["status"] == "healthy"
    assert health["components"]["alpaca"]["status"] == "unhealthy"
    assert health["components"]["polygon"]["status"] == "degraded"
    cb = health["circuit_breakers"]["alpaca"]
    assert cb["state"] == "open"
    assert cb["failure_count"] == 2
    assert cb["total_calls"] == 2
    assert cb["success_rate"] == 0.0
    assert cb["last_failure_category"] == "network"
    assert dt.datetime.fromisoformat(cb["opened_at"]).tzinfo is not None
    errors = health["error_handling"]
    assert errors["total_errors"] == 3
    assert errors["by_category"] == {"network": 2, "timeout": 1}
    assert 0.0 <= errors["error_rate"] <= 1.0
    stamp = dt.datetime.fromisoformat(health["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert [a["rule"] for a in health["alerts"]] == ["circuit_breaker_open"]


async def test_half_open_breaker_is_degraded_and_recovery_is_measured() -> None:
    """closed → healthy, half-open → degraded (during the trial), closed again with the
    recovery duration reported."""
    clock = FakeClock()
    gate = asyncio.Event()
    mode = {"fail": True}

    @breaker("broker", failure_threshold=1, reset_timeout=10)
    async def call() -> int:
        if mode["fail"]:
            raise ConnectionRefusedError("down")
        await gate.wait()
        return 1

    with use_clock(clock):
        orch = HealthOrchestrator(clock=clock)
        # a breaker is a component from its decoration on
        assert (await orch.get_system_health())["components"]["broker"]["status"] == "healthy"
        await _fail(call, 1)
        assert (await orch.get_system_health())["components"]["broker"]["status"] == "unhealthy"
        clock.advance(12)
        mode["fail"] = False
        trial = asyncio.create_task(call())
        await asyncio.sleep(0)
        health = await orch.get_system_health()
        assert health["circuit_breakers"]["broker"]["state"] == "half-open"
        assert health["components"]["broker"]["status"] == "degraded"
        gate.set()
        assert await trial == 1
        health = await orch.get_system_health()
    assert health["components"]["broker"]["status"] == "healthy"
    assert health["metrics"]["broker"]["last_recovery_seconds"] == pytest.approx(12.0)
    assert health["circuit_breakers"]["broker"]["last_recovery_seconds"] == pytest.approx(12.0)


async def test_availability_and_error_rate_from_breaker_counters() -> None:
    """Availability over the window is computed from breaker counters sampled per cycle."""
    clock = FakeClock()
    outcome = {"fail": False}

    @breaker("feed", failure_threshold=100)
    async def tick() -> int:
        if outcome["fail"]:
            raise ConnectionResetError("x")
        return 1

    with use_clock(clock):
        orch = HealthOrchestrator(clock=clock)
        await orch.run_cycle()
        for _ in range(8):
            await tick()
        outcome["fail"] = True
        await _fail(tick, 2)
        clock.advance(30)
        await orch.run_cycle()
        metrics = orch.component_metrics()["feed"]
    assert metrics["availability"] == pytest.approx(0.8)
    assert metrics["error_rate"] == pytest.approx(0.2)
    assert metrics["window_seconds"] == 300.0


async def test_cached_fallback_reads_have_a_p95() -> None:
    """A cached fallback served is recorded as a cached read with its latency."""
    fail = {"v": False}

    @fallback(cache=True, name="quotes")
    async def quote() -> float:
        if fail["v"]:
            raise ConnectionResetError("feed down")
        return 42.0

    assert await quote() == 42.0
    fail["v"] = True
    for _ in range(5):
        assert await quote() == 42.0
    orch = HealthOrchestrator()
    health = await orch.get_system_health()
    metrics = health["metrics"]["quotes"]
    assert metrics["cached_reads"] == 5
    assert metrics["p95_cached_latency_ms"] is not None
    assert metrics["p95_cached_latency_ms"] < 100.0
    assert health["components"]["quotes"]["status"] == "degraded"


async def test_explicit_call_stats_drive_availability_and_p95() -> None:
    """Code that records its calls gets availability and call-latency p95."""
    from resilient.health import stats

    s = stats("orders")
    for i in range(19):
        s.record(True, 0.001 * (i + 1))
    s.record(False, 0.5)
    summary = s.summary()
    assert summary["availability"] == pytest.approx(0.95)
    assert summary["p95_latency_ms"] == pytest.approx(19.0)


def test_p95_nearest_rank() -> None:
    """p95 by nearest rank; no data → None."""
    assert p95([]) is None
    assert p95([float(i) for i in range(1, 101)]) == 95.0
    assert p95([3.0]) == 3.0


async def test_start_runs_every_check_once_then_monitors_and_stops_cleanly() -> None:
    """start() leaves no component without a status; stop() leaves no task behind."""
    clock = FakeClock()
    runs = {"n": 0}

    def check() -> bool:
        runs["n"] += 1
        return True

    reg = HealthRegistry()
    reg.register("svc", check)
    before = asyncio.all_tasks()
    with use_clock(clock):
        orch = HealthOrchestrator(reg, clock=clock)
        report = await orch.start()
        assert report.components["svc"].status is HealthStatus.HEALTHY
        assert orch.running
        for _ in range(2000):
            if runs["n"] >= 3:
                break
            await asyncio.sleep(0.001)
        await orch.stop()
        await orch.stop()
    assert runs["n"] >= 3
    assert not orch.running
    assert asyncio.all_tasks() == before


async def test_context_manager_starts_and_stops() -> None:
    """``async with HealthOrchestrator()`` runs the monitor for the block."""
    reg = HealthRegistry()
    reg.register("svc", lambda: True)
    async with HealthOrchestrator(reg) as orch:
        assert orch.running
    assert not orch.running


async def test_get_system_health_p95_with_50_components_is_under_100ms() -> None:
    """The guide's budget: p95 < 100 ms with 50 components (25 checks + 25 breakers)."""
    for i in range(25):

        async def check(i: int = i) -> CheckResult:
            await asyncio.sleep(0)
            return CheckResult(HealthStatus.HEALTHY, "", {"n": i})

        registry.register(f"svc{i}", check)

        @breaker(f"brk{i}", failure_threshold=3)
        async def call() -> int:
            return 1

        await call()
    orch = HealthOrchestrator()
    durations = []
    for _ in range(40):
        started = time.perf_counter()
        health = await orch.get_system_health()
        durations.append(time.perf_counter() - started)
    assert len(health["components"]) == 50
    figure = p95(durations)
    assert figure is not None
    print(f"get_system_health p95 with 50 components: {figure * 1000:.2f} ms")
    assert figure < 0.1


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    secret=st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N")), min_size=12, max_size=32
    ).filter(lambda s: any(c.isdigit() for c in s) and any(c.isupper() for c in s))
)
async def test_generated_secrets_never_appear_in_system_health(secret: str) -> None:
    """A registered secret inside check details, data and error messages is always masked."""
    register_secret(secret)
    reg = HealthRegistry()

    def leaky() -> CheckResult:
        return CheckResult(HealthStatus.DEGRADED, f"login as {secret}", {"note": f"k={secret}"})

    def raising() -> None:
        raise ConnectionRefusedError(f"postgresql://u:{secret}@db:5432/x refused")

    reg.register("leaky", leaky)
    reg.register("raising", raising)
    from resilient.errors import record_error

    record_error(RuntimeError(f"token {secret}"), component="leaky")
    health = await HealthOrchestrator(reg).get_system_health()
    assert secret not in json.dumps(health)


async def test_secrets_never_reach_the_logs_of_a_health_cycle() -> None:
    """Errors, alert messages and listener failures logged during a cycle are masked."""
    from resilient import disable_logging, enable_logging
    from resilient.errors import record_error

    secret = "Tok3n-Q9x-77AbZ"
    register_secret(secret)
    lines: list[str] = []
    enable_logging("DEBUG", json_lines=False, sink=lines.append)
    try:
        reg = HealthRegistry()
        reg.register("database", lambda: CheckResult(HealthStatus.UNHEALTHY, f"pw {secret}"))

        def bad_listener(report: object) -> None:
            raise RuntimeError(f"listener saw {secret}")

        reg.on_report(bad_listener)
        record_error(ConnectionRefusedError(f"dsn postgresql://u:{secret}@h/db"), component="db")
        await HealthOrchestrator(reg).get_system_health()
    finally:
        disable_logging()
    text = "".join(lines)
    assert "database_connection_failure" in text  # the alert was logged
    assert "listener" in text
    assert secret not in text


async def test_configuration_reload_updates_alert_rules_and_keeps_them_when_invalid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload while running swaps the alert rules; an invalid alerts section keeps the old."""
    from resilient.config import reload_config

    reg = HealthRegistry()
    orch = HealthOrchestrator(reg)
    await orch.start()
    try:
        monkeypatch.setenv("AI_TRADER_ALERTS__HIGH_ERROR_RATE__NOTIFICATION", "10 seconds")
        reload_config()
        rule = next(r for r in orch.alerts.rules if r.name == "high_error_rate")
        assert rule.delay == 10.0
        monkeypatch.setenv("AI_TRADER_ALERTS__HIGH_ERROR_RATE__NOTIFICATION", "whenever")
        reload_config()
        rule = next(r for r in orch.alerts.rules if r.name == "high_error_rate")
        assert rule.delay == 10.0
    finally:
        await orch.stop()
        monkeypatch.delenv("AI_TRADER_ALERTS__HIGH_ERROR_RATE__NOTIFICATION")
        reload_config()
    assert next(r for r in orch.alerts.rules if r.name == "high_error_rate").delay == 10.0


async def test_disabled_health_checks_run_once_at_start_without_a_monitor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With resilience.health_check_enabled = false, start() reports once and starts no task."""
    from resilient.config import ConfigManager

    monkeypatch.setenv("AI_TRADER_RESILIENCE__HEALTH_CHECK_ENABLED", "false")
    config = ConfigManager("testing", environ=dict(os.environ)).load_config()
    reg = HealthRegistry()
    reg.register("svc", lambda: True)
    orch = HealthOrchestrator(reg, config=config)
    report = await orch.start()
    assert report.components["svc"].status is HealthStatus.HEALTHY
    assert not orch.running
    await orch.stop()


async def test_error_rate_leaves_refused_calls_to_their_own_series() -> None:
    """Calls an open circuit refused (served by a fallback) are neither errors nor operations
    of the error rate: failures over calls that reached the service; refusals counted apart."""
    from resilient.errors import tracker

    mode = {"fail": False}

    @fallback(value=-1, name="feed")
    @breaker("feed", failure_threshold=2, reset_timeout=60)
    async def tick() -> int:
        if mode["fail"]:
            raise ConnectionResetError("x")
        return 1

    with use_clock(FakeClock()):
        for _ in range(5):
            assert await tick() == 1
        mode["fail"] = True
        for _ in range(5):  # two failures open the circuit, three calls are refused
            assert await tick() == -1
        health = await HealthOrchestrator().get_system_health()
        assert tracker.error_rate() == pytest.approx(2 / 7)
    assert health["circuit_breakers"]["feed"]["rejected_calls"] == 3
    assert health["error_handling"]["by_category"] == {"network": 2}
    assert health["error_handling"]["circuit_open_rejections"] == {
        "total": 3,
        "by_component": {"feed": 3},
    }
    assert health["error_handling"]["error_rate"] == pytest.approx(2 / 7)


async def test_benchmark_module_measures_and_cleans_up() -> None:
    """The benchmark reports percentiles and removes the breakers it created."""
    from resilient import breakers
    from resilient.health._bench import bench_system_health

    result = await bench_system_health(components=10, rounds=5)
    assert result["components"] == 10
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"] < 1000
    assert not [n for n in breakers.names() if n.startswith("bench-")]


async def test_get_system_health_returns_by_its_deadline_whatever_a_check_does() -> None:
    """A check that ignores cancellation and a sync check blocking its thread: the system
    health arrives by the longest timeout plus the stop grace, both components unhealthy,
    and a second cycle neither waits for them nor starts them again."""
    from resilient.health._registry import STOP_GRACE

    release = threading.Event()
    starts = {"async": 0, "sync": 0}

    async def stubborn() -> str:
        starts["async"] += 1
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.005)
        return "healthy"

    def blocking() -> bool:
        starts["sync"] += 1
        return release.wait(10.0)

    registry.register("stubborn", stubborn, timeout=0.05)
    registry.register("blocking", blocking, timeout=0.1)
    orchestrator = HealthOrchestrator()
    try:
        for _ in range(2):
            began = time.perf_counter()
            health = await orchestrator.get_system_health()
            assert time.perf_counter() - began < 0.1 + STOP_GRACE + 1.0
            for name in ("stubborn", "blocking"):
                component = health["components"][name]
                assert component["status"] == "unhealthy"
                assert "did not stop at its timeout" in component["detail"]
            assert health["overall_status"] == "unhealthy"
        assert starts == {"async": 1, "sync": 1}
    finally:
        release.set()
        await orchestrator.stop()
    for _ in range(200):  # let the stubborn task see the release before the loop closes
        if (await registry.check_all()).components["stubborn"].status is HealthStatus.HEALTHY:
            break
        await asyncio.sleep(0.01)
