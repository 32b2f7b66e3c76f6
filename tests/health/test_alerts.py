"""Alert rules: the guide's four, parsed from settings, fire once and resolve once on a
scripted fake-clock timeline, delivered to loguru and to callbacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resilient import ConfigError, FakeClock, disable_logging, enable_logging
from resilient.config import ConfigManager, current_config
from resilient.errors import tracker
from resilient.health import HealthOrchestrator, HealthRegistry
from resilient.health._alerts import (
    AlertEvent,
    AlertManager,
    AlertRule,
    parse_duration,
    rules_from_config,
)


def _values(
    breakers: dict[str, str] | None = None,
    status: str = "healthy",
    rate: float = 0.0,
    components: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    return {
        "circuit_breaker_state": breakers or {},
        "health_status": {"system": status},
        "error_rate": {"system": rate},
        "component_health": components or {},
    }


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def manager(clock: FakeClock) -> AlertManager:
    return AlertManager.from_config(current_config(), clock=clock)


def test_settings_hold_the_guides_four_rules() -> None:
    """settings.toml carries the guide's rules with their severities and delays."""
    rules, options = rules_from_config(current_config().section("alerts"))
    by_name = {r.name: r for r in rules}
    assert set(by_name) == {
        "circuit_breaker_open",
        "service_degraded",
        "high_error_rate",
        "database_connection_failure",
    }
    assert (by_name["circuit_breaker_open"].severity, by_name["circuit_breaker_open"].delay) == (
        "critical",
        0.0,
    )
    assert (by_name["service_degraded"].severity, by_name["service_degraded"].delay) == (
        "warning",
        300.0,
    )
    assert (by_name["high_error_rate"].severity, by_name["high_error_rate"].delay) == (
        "warning",
        120.0,
    )
    assert by_name["database_connection_failure"].delay == 0.0
    assert options["error_rate_window"] == 60.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("immediate", 0.0),
        ("5 minutes", 300.0),
        ("2 minutes", 120.0),
        ("30 seconds", 30.0),
        ("1 hour", 3600.0),
        ("45s", 45.0),
        (90, 90.0),
        ("1.5 min", 90.0),
    ],
)
def test_notification_durations(text: object, seconds: float) -> None:
    """The guide's notification texts and plain numbers are durations."""
    assert parse_duration(text) == seconds


def test_breaker_open_fires_once_and_resolves_once(manager: AlertManager, clock: FakeClock) -> None:
    """An open circuit alerts immediately, once per episode, and resolves once when it closes."""
    events = manager.evaluate(_values({"alpaca": "open", "polygon": "closed"}))
    assert [(e.rule, e.subject, e.state, e.severity) for e in events] == [
        ("circuit_breaker_open", "alpaca", "firing", "critical")
    ]
    for _ in range(10):
        clock.advance(30)
        assert manager.evaluate(_values({"alpaca": "open"})) == []
    assert [e.rule for e in manager.active()] == ["circuit_breaker_open"]
    clock.advance(30)
    events = manager.evaluate(_values({"alpaca": "half-open"}))
    assert [(e.subject, e.state) for e in events] == [("alpaca", "resolved")]
    assert manager.evaluate(_values({"alpaca": "closed"})) == []
    # a new episode fires again
    assert [e.state for e in manager.evaluate(_values({"alpaca": "open"}))] == ["firing"]


def test_degraded_must_hold_five_minutes(manager: AlertManager, clock: FakeClock) -> None:
    """service_degraded fires only after five continuous minutes; a recovery restarts the wait."""
    fired: list[AlertEvent] = []
    for _ in range(9):  # 0 .. 4 min 30 s
        fired += manager.evaluate(_values(status="degraded"))
        clock.advance(30)
    assert fired == []
    manager.evaluate(_values(status="healthy"))  # interrupted at 4:30
    for _ in range(10):  # 0 .. 4:30 again
        fired += manager.evaluate(_values(status="degraded"))
        clock.advance(30)
    assert fired == []
    fired += manager.evaluate(_values(status="degraded"))  # 5:00 of the second episode
    assert [(e.rule, e.state) for e in fired] == [("service_degraded", "firing")]
    clock.advance(600)
    assert manager.evaluate(_values(status="degraded")) == []
    resolved = manager.evaluate(_values(status="healthy"))
    assert [(e.rule, e.state) for e in resolved] == [("service_degraded", "resolved")]
    assert resolved[0].since == fired[0].since


def test_high_error_rate_after_two_minutes(manager: AlertManager, clock: FakeClock) -> None:
    """error_rate > 0.1 fires after two minutes; exactly 0.1 does not count."""
    assert manager.evaluate(_values(rate=0.1)) == []
    clock.advance(500)
    assert manager.evaluate(_values(rate=0.1)) == []
    assert manager.evaluate(_values(rate=0.25)) == []
    clock.advance(119)
    assert manager.evaluate(_values(rate=0.3)) == []
    clock.advance(1)
    events = manager.evaluate(_values(rate=0.3))
    assert [(e.rule, e.value) for e in events] == [("high_error_rate", 0.3)]
    clock.advance(10)
    assert [e.state for e in manager.evaluate(_values(rate=0.05))] == ["resolved"]


def test_database_unhealthy_is_immediate_and_absent_database_never_alerts(
    manager: AlertManager,
) -> None:
    """database_health refers to the "database" component; without one nothing fires."""
    assert manager.evaluate(_values(components={"cache": "unhealthy"})) == []
    events = manager.evaluate(_values(components={"database": "unhealthy"}))
    assert [(e.rule, e.subject, e.severity) for e in events] == [
        ("database_connection_failure", "database", "critical")
    ]
    assert manager.evaluate(_values(components={"database": "unhealthy"})) == []
    assert [e.state for e in manager.evaluate(_values(components={}))] == ["resolved"]


async def test_callbacks_sync_and_async_get_each_event_once_and_a_failing_one_is_isolated(
    manager: AlertManager, clock: FakeClock
) -> None:
    """Every callback sees firing and resolution once; a raising callback harms no one."""
    sync_seen: list[tuple[str, str]] = []
    async_seen: list[tuple[str, str]] = []

    async def acb(event: AlertEvent) -> None:
        async_seen.append((event.rule, event.state))

    def broken(event: AlertEvent) -> None:
        raise RuntimeError("pager down")

    manager.on_alert(broken)
    manager.on_alert(lambda e: sync_seen.append((e.rule, e.state)))
    remove = manager.on_alert(acb)
    for _ in range(3):
        await manager.aevaluate(_values({"alpaca": "open"}))
        clock.advance(5)
    await manager.aevaluate(_values({"alpaca": "closed"}))
    expected = [("circuit_breaker_open", "firing"), ("circuit_breaker_open", "resolved")]
    assert sync_seen == expected
    assert async_seen == expected
    remove()
    await manager.aevaluate(_values({"alpaca": "open"}))
    assert len(async_seen) == 2
    assert len(sync_seen) == 3


def test_events_are_logged_with_their_severity(manager: AlertManager) -> None:
    """Firing critical alerts log at CRITICAL, resolutions at INFO."""
    lines: list[str] = []
    enable_logging("DEBUG", json_lines=True, sink=lines.append)
    try:
        manager.evaluate(_values({"alpaca": "open"}))
        manager.evaluate(_values({"alpaca": "closed"}))
    finally:
        disable_logging()
    records = [json.loads(line) for line in lines if "circuit_breaker_open" in line]
    assert [r["level"] for r in records] == ["CRITICAL", "INFO"]
    assert "firing for alpaca" in records[0]["message"]


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ({"condition": "error_rate >> 0.1"}, "alerts.bad.condition"),
        ({"condition": 'error_rate > "high"'}, "alerts.bad.condition"),
        ({"condition": "error_rate > 0.1", "severity": "page-me"}, "alerts.bad.severity"),
        ({"condition": "error_rate > 0.1", "notification": "soonish"}, "alerts.bad.notification"),
        ({"condition": "error_rate > 0.1", "channel": "sms"}, "alerts.bad.channel"),
        ({"condition": "error_rate > 0.1", "enabled": "yes"}, "alerts.bad.enabled"),
    ],
)
def test_invalid_rules_name_the_key_and_the_fix(spec: dict[str, Any], key: str) -> None:
    """A broken rule fails at load with ConfigError naming the key."""
    with pytest.raises(ConfigError) as info:
        rules_from_config({"bad": spec}, env="testing")
    assert [p.key for p in info.value.problems] == [key]
    assert info.value.problems[0].fix


def test_unknown_option_and_disabled_rule() -> None:
    """Unknown scalars are refused; a disabled rule never fires."""
    with pytest.raises(ConfigError, match=r"alerts\.verbose"):
        rules_from_config({"verbose": True})
    rule = AlertRule.parse("r", {"condition": "error_rate > 0", "enabled": False})
    mgr = AlertManager([rule])
    assert mgr.evaluate(_values(rate=1.0)) == []


async def test_orchestrator_cycles_drive_alerts_on_a_fake_clock(clock: FakeClock) -> None:
    """Health cycles evaluate the rules: a failing database fires once, then resolves once."""
    tracker.reset()
    up = {"db": True}
    reg = HealthRegistry(clock=clock)
    reg.register("database", lambda: up["db"], critical=True)
    events: list[tuple[str, str]] = []
    orch = HealthOrchestrator(reg, clock=clock)
    orch.alerts.on_alert(lambda e: events.append((e.rule, e.state)))
    await orch.run_cycle()
    up["db"] = False
    for _ in range(4):
        clock.advance(30)
        health = await orch.get_system_health()
    assert health["overall_status"] == "unhealthy"
    assert [a["rule"] for a in health["alerts"]] == ["database_connection_failure"]
    up["db"] = True
    clock.advance(30)
    await orch.run_cycle()
    assert events == [
        ("database_connection_failure", "firing"),
        ("database_connection_failure", "resolved"),
    ]
    tracker.reset()


def test_rules_from_the_guides_yaml_layer(tmp_path: Path) -> None:
    """config/config.<env>.yaml in the guide's alert shape overrides a default rule."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.testing.yaml").write_text(
        "alerts:\n"
        "  high_error_rate:\n"
        "    condition: error_rate > 0.5\n"
        "    severity: critical\n"
        "    notification: 30 seconds\n"
    )
    config = ConfigManager("testing", cwd=tmp_path).load_config()
    clock = FakeClock()
    mgr = AlertManager.from_config(config, clock=clock)
    rule = next(r for r in mgr.rules if r.name == "high_error_rate")
    assert (rule.severity, rule.delay, rule.literal) == ("critical", 30.0, 0.5)
    assert len(mgr.rules) == 4  # the other defaults stay
    assert mgr.evaluate(_values(rate=0.4)) == []
    mgr.evaluate(_values(rate=0.6))
    clock.advance(30)
    assert [e.severity for e in mgr.evaluate(_values(rate=0.6))] == ["critical"]


def test_invalid_alert_settings_fail_the_orchestrator_start_up(tmp_path: Path) -> None:
    """A broken rule in settings is a ConfigError at construction, naming the key."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.testing.yaml").write_text(
        "alerts:\n  high_error_rate:\n    notification: whenever\n"
    )
    config = ConfigManager("testing", cwd=tmp_path).load_config()
    with pytest.raises(ConfigError) as info:
        HealthOrchestrator(HealthRegistry(), config=config)
    assert [p.key for p in info.value.problems] == ["alerts.high_error_rate.notification"]
    assert info.value.problems[0].env == "testing"
