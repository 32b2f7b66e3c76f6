"""``services`` settings checked when a factory is built: every broken value is named with
its rule; valid exclusions and hedge delays are accepted."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from resilient.config import Config, ConfigError, current_config
from resilient.health import HealthRegistry
from resilient.integration import ResilienceFactory


def _with_services(services: dict[str, Any]) -> Config:
    base = current_config()
    return dataclasses.replace(base, extra={**base.extra, "services": services})


def _problems(services: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        ResilienceFactory(_with_services(services), registry=HealthRegistry(), logging=False)
    return {p.key: p.rule for p in info.value.problems}


@pytest.mark.parametrize(
    ("services", "key", "rule"),
    [
        ({"alpaca": {"methods": {"get_bars": {"kind": "write"}}}}, "kind", "must be one of"),
        ({"alpaca": {"hedge_after": "soon"}}, "hedge_after", "is not a hedge delay"),
        ({"alpaca": {"hedge_after": "p100"}}, "hedge_after", "is not a hedge delay"),
        ({"alpaca": {"hedge_after": 5}}, "hedge_after", "must be a string"),
        ({"alpaca": {"timeout": 0}}, "timeout", "must be > 0"),
        ({"alpaca": {"initial_delay": -1}}, "initial_delay", "must be ≥ 0"),
        ({"alpaca": {"exclude": "validation"}}, "exclude", "must be a list"),
        ({"alpaca": {"exclude": ["nonsense"]}}, "exclude", "'nonsense' is not an error category"),
        ({"alpaca": {"exclude": [700]}}, "exclude", "700 is not an error category"),
        ({"alpaca": {"exclude": [1.5]}}, "exclude", "1.5 is not an error category"),
        ({"alpaca": {"methods": 3}}, "methods", "must be a table of methods"),
        ({"alpaca": {"methods": {"get_bars": 3}}}, "get_bars", "must be a table of settings"),
        ({"alpaca": {"methods": {"get_bars": {"paper": True}}}}, "paper", ""),
    ],
)
def test_each_broken_service_value_is_named(services: dict[str, Any], key: str, rule: str) -> None:
    problems = _problems(services)
    matching = {k: r for k, r in problems.items() if k.endswith(key)}
    assert matching, problems
    assert any(r.startswith(rule) for r in matching.values()), matching


def test_valid_exclusions_and_hedge_delays_are_accepted() -> None:
    config = _with_services(
        {
            "alpaca": {
                "exclude": ["-validation", "404", "-429", 503, "network"],
                "hedge_after": "p95",
                "methods": {"get_bars": {"hedge_after": "0.05", "kind": "read", "weight": 2}},
            }
        }
    )
    factory = ResilienceFactory(config, registry=HealthRegistry(), logging=False)
    assert factory.services == {}
