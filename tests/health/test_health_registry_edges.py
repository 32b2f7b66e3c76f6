"""HealthRegistry at its edges: what a check may return or raise, providers and listeners
that fail, registration errors, the synchronous entry point and the monitor."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from resilient.health import CheckResult, HealthRegistry, HealthReport, HealthStatus


def _run(registry: HealthRegistry) -> HealthReport:
    return registry.check_all_sync()


@pytest.mark.parametrize(
    ("raised", "detail"),
    [
        (StopIteration(), "StopIteration"),
        (SystemExit("bye"), "SystemExit: bye"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
    ],
)
def test_sync_check_raising_a_control_flow_exception_is_unhealthy(
    raised: BaseException, detail: str
) -> None:
    """What must not escape a thread (or cannot cross a future) is reported, not raised."""

    def check() -> None:
        raise raised

    registry = HealthRegistry()
    registry.register("odd", check)
    component = _run(registry).components["odd"]
    assert component.status is HealthStatus.UNHEALTHY
    assert component.detail == detail
    assert component.data["error_type"] == type(raised).__name__


class _Exploding(Mapping[str, Any]):
    def __contains__(self, key: object) -> bool:
        return True

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("no reading me")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("value", "status", "detail"),
    [
        ({"status": True, "lag": 2}, HealthStatus.HEALTHY, ""),
        ({"status": False, "detail": "behind"}, HealthStatus.UNHEALTHY, "behind"),
        ({"status": "degraded", "detail": "slow"}, HealthStatus.DEGRADED, "slow"),
        ({"status": "meh"}, HealthStatus.UNHEALTHY, "check returned an unknown status"),
        ({"status": 3}, HealthStatus.UNHEALTHY, "check returned an unknown status"),
        ("sideways", HealthStatus.UNHEALTHY, "check returned an unknown status"),
        (3.5, HealthStatus.UNHEALTHY, "check returned unsupported float"),
        (False, HealthStatus.UNHEALTHY, "check returned False"),
        (_Exploding(), HealthStatus.UNHEALTHY, "check returned a value that cannot be read"),
    ],
)
def test_what_a_check_returns(value: Any, status: HealthStatus, detail: str) -> None:
    registry = HealthRegistry()
    registry.register("c", lambda: value)
    component = _run(registry).components["c"]
    assert component.status is status
    assert component.detail.startswith(detail)
    if detail == "":
        assert component.detail == ""
    if isinstance(value, dict) and value.get("lag") is not None:
        assert component.data == {"lag": 2}


def test_mapping_data_is_kept_without_status_and_detail() -> None:
    registry = HealthRegistry()

    async def check() -> dict[str, Any]:
        return {"status": "healthy", "detail": "ok", "queue": 4, "lag_ms": 1.5}

    registry.register("q", check)
    component = _run(registry).components["q"]
    assert component.detail == "ok"
    assert component.data == {"queue": 4, "lag_ms": 1.5}


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_timeout_must_be_positive(timeout: float) -> None:
    with pytest.raises(ValueError, match=r"timeout for health check .c. must be [>≥] 0 seconds"):
        HealthRegistry().register("c", lambda: True, timeout=timeout)


def test_registration_errors() -> None:
    registry = HealthRegistry()
    with pytest.raises(TypeError, match="must be callable"):
        registry.register("c", "not a function")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty component name"):
        registry.register("", lambda: True)
    assert registry.names() == []
    assert registry.unregister("never") is False


def test_a_failing_provider_is_skipped_and_others_still_report() -> None:
    registry = HealthRegistry()

    def broken() -> dict[str, CheckResult]:
        raise RuntimeError("provider down")

    registry.add_provider(broken)
    remove = registry.add_provider(lambda: {"extra": CheckResult(HealthStatus.DEGRADED, "x")})
    registry.register("db", lambda: True)
    report = _run(registry)
    assert set(report.components) == {"db", "extra"}
    assert report.overall_status is HealthStatus.DEGRADED
    assert report.components["extra"].critical is False
    remove()
    remove()  # idempotent
    assert set(_run(registry).components) == {"db"}


def test_provider_does_not_override_a_registered_check() -> None:
    registry = HealthRegistry()
    registry.register("db", lambda: True)
    registry.add_provider(lambda: {"db": CheckResult(HealthStatus.UNHEALTHY, "provided")})
    assert _run(registry).components["db"].status is HealthStatus.HEALTHY


def test_set_critical_overrides_registration_and_providers() -> None:
    registry = HealthRegistry()
    registry.register("db", lambda: False, critical=True)
    registry.add_provider(lambda: {"feed": CheckResult(HealthStatus.UNHEALTHY)})
    assert _run(registry).overall_status is HealthStatus.UNHEALTHY
    registry.set_critical("db", False)
    report = _run(registry)
    assert report.components["db"].critical is False
    assert report.overall_status is HealthStatus.DEGRADED
    registry.set_critical("feed")
    assert _run(registry).overall_status is HealthStatus.UNHEALTHY


async def test_listeners_sync_and_async_and_a_failing_one() -> None:
    registry = HealthRegistry()
    registry.register("db", lambda: True)
    seen: list[str] = []

    def broken(report: HealthReport) -> None:
        raise ValueError("listener bug")

    async def good(report: HealthReport) -> None:
        seen.append(report.overall_status.value)

    registry.on_report(broken)
    remove = registry.on_report(good)
    report = await registry.check_all()
    assert seen == ["healthy"]
    assert registry.last_report is report
    component = registry.component("db")
    assert component is not None and component.status is HealthStatus.HEALTHY
    assert registry.component("nope") is None
    remove()
    remove()
    await registry.check_all()
    assert seen == ["healthy"]


def test_consecutive_failures_count_and_reset() -> None:
    state = {"ok": False}
    registry = HealthRegistry()
    registry.register("db", lambda: state["ok"])
    assert [_run(registry).components["db"].consecutive_failures for _ in range(3)] == [1, 2, 3]
    state["ok"] = True
    assert _run(registry).components["db"].consecutive_failures == 0


def test_reset_keeps_providers_and_clear_drops_them() -> None:
    registry = HealthRegistry()
    registry.register("db", lambda: True)
    registry.add_provider(lambda: {"p": CheckResult(HealthStatus.HEALTHY)})
    _run(registry)
    registry.reset()
    assert registry.names() == [] and registry.last_report is None
    assert set(_run(registry).components) == {"p"}
    registry.clear()
    assert _run(registry).components == {}


async def test_monitor_runs_checks_until_stopped() -> None:
    runs = 0

    def check() -> bool:
        nonlocal runs
        runs += 1
        return True

    registry = HealthRegistry()
    registry.register("db", check)
    with pytest.raises(ValueError):
        registry.start_monitor(0)
    assert not registry.monitoring
    task = registry.start_monitor(0.01)
    assert registry.start_monitor(0.01) is task  # idempotent
    assert registry.monitoring
    for _ in range(500):
        if runs >= 2:
            break
        await asyncio.sleep(0.01)
    await registry.stop_monitor()
    assert runs >= 2
    assert not registry.monitoring and task.done()
    await registry.stop_monitor()  # idempotent


async def test_monitor_with_the_configured_interval_starts_and_stops() -> None:
    registry = HealthRegistry()
    registry.register("db", lambda: True)
    registry.start_monitor()
    try:
        for _ in range(500):
            if registry.last_report is not None:
                break
            await asyncio.sleep(0.01)
        assert registry.last_report is not None  # the first cycle runs at once
    finally:
        await registry.stop_monitor()
    assert not registry.monitoring
