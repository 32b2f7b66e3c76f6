"""Alert rules at their edges: invalid options and rules from the settings, conditions on
values of the wrong type, callbacks that fail, the log level of each event, and reset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from resilient import disable_logging, enable_logging
from resilient.config import ConfigError, ConfigManager
from resilient.health import AlertEvent, AlertManager, AlertRule
from resilient.testing import FakeClock


def _config(tmp_path: Path, toml: str) -> Any:
    (tmp_path / "settings.toml").write_text(toml, encoding="utf-8")
    return ConfigManager("development", cwd=tmp_path).load_config()


def test_invalid_alert_options_are_all_reported(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "[default.alerts]\nerror_rate_window = -5\nbogus = 3\n",
    )
    with pytest.raises(ConfigError) as info:
        AlertManager.from_config(config)
    keys = [p.key for p in info.value.problems]
    assert keys == ["alerts.error_rate_window", "alerts.bogus"]
    assert info.value.problems[0].rule == "must be a positive number of seconds"
    assert "neither an alert rule table nor a known option" in info.value.problems[1].rule


@pytest.mark.parametrize("window", ["true", "0", '"soon"', '"-3 minutes"'])
def test_error_rate_window_must_be_a_positive_duration(tmp_path: Path, window: str) -> None:
    config = _config(tmp_path, f"[default.alerts]\nerror_rate_window = {window}\n")
    with pytest.raises(ConfigError) as info:
        AlertManager.from_config(config)
    assert [p.key for p in info.value.problems] == ["alerts.error_rate_window"]


def test_valid_options_and_rules_from_the_settings(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        '[default.alerts]\nerror_rate_window = "2 minutes"\n'
        '[default.alerts.slow]\ncondition = "error_rate >= 0.5"\nseverity = "info"\n'
        'notification = "30 secs"\n',
    )
    manager = AlertManager.from_config(config)
    assert manager.options == {"error_rate_window": 120.0}
    slow = next(r for r in manager.rules if r.name == "slow")
    assert (slow.variable, slow.op, slow.literal, slow.delay) == ("error_rate", ">=", 0.5, 30.0)
    assert slow.severity == "info"


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        (
            {"condition": "error_rate > high", "severity": "loud", "notification": True},
            ["alerts.r.condition", "alerts.r.severity", "alerts.r.notification"],
        ),
        ({"condition": 'x == "a"', "notification": -1, "enabled": "yes"}, None),
        ({"condition": 42, "colour": "red"}, ["alerts.r.colour", "alerts.r.condition"]),
    ],
)
def test_rule_problems_name_each_key(spec: dict[str, Any], keys: list[str] | None) -> None:
    with pytest.raises(ConfigError) as info:
        AlertRule.parse("r", spec)
    found = [p.key for p in info.value.problems]
    if keys is None:
        assert found == ["alerts.r.notification", "alerts.r.enabled"]
    else:
        assert found == keys


def test_numeric_condition_ignores_values_that_are_not_numbers() -> None:
    rule = AlertRule.parse("high", {"condition": "error_rate > 0.5"})
    assert rule.holds(0.7) and rule.holds(1)
    assert not rule.holds(0.2)
    assert not rule.holds("0.9")
    assert not rule.holds(True)  # a bool is not a rate
    assert not rule.holds(None)


def test_text_condition_compares_the_text_of_the_value() -> None:
    rule = AlertRule.parse("st", {"condition": "component_health != healthy"})
    assert rule.literal == "healthy"
    assert rule.holds("degraded")
    assert not rule.holds("healthy")
    assert rule.holds(3)  # "3" != "healthy"


def test_component_health_rule_for_a_missing_component_never_fires() -> None:
    manager = AlertManager(
        [AlertRule.parse("cache_down", {"condition": 'cache_health == "unhealthy"'})]
    )
    assert manager.evaluate({"component_health": {"database": "unhealthy"}}) == []
    events = manager.evaluate({"component_health": {"cache": "unhealthy"}})
    assert [(e.rule, e.subject, e.state) for e in events] == [("cache_down", "cache", "firing")]


def test_disabled_rules_are_dropped() -> None:
    rule = AlertRule.parse("off", {"condition": "error_rate > 0", "enabled": False})
    assert not rule.enabled
    manager = AlertManager([rule])
    assert manager.rules == []
    assert manager.evaluate({"error_rate": {"system": 1.0}}) == []


def test_event_to_dict_keeps_json_values_and_stringifies_others() -> None:
    manager = AlertManager([AlertRule.parse("r", {"condition": 'state == "x"'})])
    event = manager.evaluate({"state": {"svc": "x"}})[0]
    data = event.to_dict()
    assert data["value"] == "x" and data["state"] == "firing" and data["subject"] == "svc"
    odd = AlertEvent("r", "svc", "info", "firing", "c", ("a", 1), "m", "s", "t")
    assert odd.to_dict()["value"] == "('a', 1)"


async def test_a_failing_callback_is_logged_once_and_others_still_run() -> None:
    clock = FakeClock()
    manager = AlertManager([AlertRule.parse("r", {"condition": "error_rate > 0.1"})], clock=clock)
    received: list[str] = []
    calls = 0

    def broken(event: AlertEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("pager down")

    async def good(event: AlertEvent) -> None:
        received.append(event.state)

    manager.on_alert(broken)
    remove_good = manager.on_alert(good)
    lines: list[str] = []
    enable_logging("ERROR", json_lines=True, sink=lines.append)
    try:
        await manager.aevaluate({"error_rate": {"system": 0.5}})
        await manager.aevaluate({"error_rate": {"system": 0.0}})
    finally:
        disable_logging()
    messages = [json.loads(line)["message"] for line in lines]
    assert calls == 2
    assert received == ["firing", "resolved"]
    failures = [m for m in messages if "alert callback" in m]
    assert len(failures) == 1 and "RuntimeError: pager down" in failures[0]
    remove_good()
    remove_good()  # removing twice is harmless
    await manager.aevaluate({"error_rate": {"system": 0.5}})
    assert received == ["firing", "resolved"]


@pytest.mark.parametrize(
    ("severity", "level"), [("critical", "CRITICAL"), ("warning", "WARNING"), ("info", "INFO")]
)
def test_events_are_logged_at_the_rule_severity(severity: str, level: str) -> None:
    manager = AlertManager(
        [AlertRule.parse("r", {"condition": "error_rate > 0.1", "severity": severity})]
    )
    lines: list[str] = []
    enable_logging("DEBUG", json_lines=True, sink=lines.append)
    try:
        manager.evaluate({"error_rate": {"system": 0.9}})
        manager.evaluate({"error_rate": {"system": 0.0}})
    finally:
        disable_logging()
    records = [(r["level"], r["message"]) for r in map(json.loads, lines)]
    alerts = [r for r in records if r[1].startswith("alert r ")]
    assert alerts[0] == (level, "alert r firing for system: error_rate > 0.1 (value 0.9)")
    assert alerts[1] == ("INFO", "alert r resolved for system: error_rate > 0.1 no longer holds")


def test_reset_forgets_firing_alerts_and_history() -> None:
    manager = AlertManager([AlertRule.parse("r", {"condition": "error_rate > 0.1"})])
    manager.evaluate({"error_rate": {"system": 0.9}})
    assert len(manager.active()) == 1 and len(manager.history) == 1
    manager.reset()
    assert manager.active() == [] and len(manager.history) == 0
    # the alert fires again: it was forgotten, not resolved
    assert [e.state for e in manager.evaluate({"error_rate": {"system": 0.9}})] == ["firing"]


def test_replace_rules_keeps_surviving_alerts_and_drops_removed_ones() -> None:
    keep = AlertRule.parse("keep", {"condition": "error_rate > 0.1"})
    drop = AlertRule.parse("drop", {"condition": "error_rate > 0.2"})
    manager = AlertManager([keep, drop])
    manager.evaluate({"error_rate": {"system": 0.9}})
    assert {e.rule for e in manager.active()} == {"keep", "drop"}
    manager.replace_rules([keep], {"error_rate_window": 30.0})
    assert manager.options == {"error_rate_window": 30.0}
    assert [e.rule for e in manager.active()] == ["keep"]
    # no resolution is emitted for the dropped rule, and the kept one stays firing
    assert manager.evaluate({"error_rate": {"system": 0.9}}) == []
