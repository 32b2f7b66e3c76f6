"""The ``services`` settings section: layering and validation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from resilient import ConfigError
from resilient.config import Config, current_config
from resilient.trading import service_settings


def with_services(services: dict[str, Any]) -> Config:
    config = current_config()
    return replace(config, extra={**config.extra, "services": services})


def test_defaults_come_from_the_resilience_and_trading_sections() -> None:
    """A service without settings takes the resilience/trading defaults."""
    config = with_services({})
    s = service_settings(config, "main_broker")
    assert s.resilience_enabled
    assert s.policy.failure_threshold == config.resilience.circuit_breaker_failure_threshold
    assert s.policy.order_timeout == config.trading.default_order_timeout
    assert s.policy.max_attempts == config.resilience.retry_max_attempts


def test_service_overrides_defaults_and_methods_override_service() -> None:
    """defaults < service < method."""
    config = with_services(
        {
            "defaults": {"rate_limit": "200/minute", "timeout": 5.0},
            "main_data": {
                "timeout": 2.0,
                "resilience_enabled": False,
                "methods": {"get_bars": {"timeout": 30.0, "max_attempts": 5}},
            },
        }
    )
    s = service_settings(config, "main_data")
    assert s.rate_limit == "200/minute"
    assert s.policy.timeout == 2.0
    assert not s.resilience_enabled
    assert s.for_method("get_bars").timeout == 30.0
    assert s.for_method("get_bars").max_attempts == 5
    assert s.for_method("get_current_price").timeout == 2.0
    other = service_settings(config, "other")
    assert other.policy.timeout == 5.0 and other.resilience_enabled


@pytest.mark.parametrize(
    ("services", "key", "rule"),
    [
        ({"b": {"timeout": 0}}, "services.b.timeout", "must be > 0"),
        ({"b": {"timeout": "fast"}}, "services.b.timeout", "must be a number"),
        ({"b": {"rate_limit": "lots"}}, "services.b.rate_limit", "is not a rate limit"),
        ({"b": {"resilience_enabled": "yes"}}, "services.b.resilience_enabled", "boolean"),
        ({"b": {"timout": 1.0}}, "services.b.timout", "is not a known service setting"),
        ({"b": {"methods": {"m": {"kind": "write"}}}}, "services.b.methods.m.kind", "one of"),
        ({"defaults": {"max_attempts": 1.5}}, "services.defaults.max_attempts", "integer"),
    ],
)
def test_invalid_settings_name_key_and_rule(services: dict[str, Any], key: str, rule: str) -> None:
    """Each broken value is reported with its key, the rule and a fix."""
    with pytest.raises(ConfigError) as info:
        service_settings(with_services(services), "b")
    problem = info.value.problems[0]
    assert problem.key == key
    assert rule in problem.rule
    assert problem.fix


def test_typo_gets_a_suggestion() -> None:
    """An unknown key close to a known one suggests it."""
    with pytest.raises(ConfigError) as info:
        service_settings(with_services({"b": {"rate_limt": "1/second"}}), "b")
    assert "rate_limit" in info.value.problems[0].fix


def test_environment_variables_reach_services_and_methods(tmp_path: Any) -> None:
    """AI_TRADER_SERVICES__<NAME>__… sets service and per-method values (the canary switch)."""
    from resilient.config import ConfigManager

    environ = {
        "AI_TRADER_ENV": "staging",
        "AI_TRADER_SERVICES__MAIN_BROKER__RESILIENCE_ENABLED": "false",
        "AI_TRADER_SERVICES__MAIN_BROKER__RATE_LIMIT": "150/minute",
        "AI_TRADER_SERVICES__MAIN_BROKER__METHODS__GET_BARS__TIMEOUT": "30",
    }
    config = ConfigManager("staging", cwd=tmp_path, environ=environ).load_config()
    s = service_settings(config, "main_broker")
    assert not s.resilience_enabled
    assert s.rate_limit == "150/minute"
    assert s.for_method("get_bars").timeout == 30.0
    assert s.policy.timeout == 10.0  # the built-in services.defaults
