"""Configuration validation errors through ``ConfigManager``: each broken value is named with
its rule, and the manager's process and standalone modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from resilient.config import (
    Config,
    ConfigError,
    ConfigManager,
    current_config,
    reload_config,
    subscribe,
)


def _problems(
    tmp_path: Path, environ: dict[str, str], env: str = "development"
) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        ConfigManager(env, cwd=tmp_path, environ=environ).load_config()
    return [(p.key, p.rule) for p in info.value.problems]


@pytest.mark.parametrize(
    ("environ", "key", "rule"),
    [
        (
            {"AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS": "1" + "0" * 400},
            "resilience.retry_max_attempts",
            "must be a finite number",
        ),
        ({"AI_TRADER_REDIS__TIMEOUT": "nan"}, "redis.timeout", "must be a finite number (got nan)"),
        ({"AI_TRADER_REDIS__TIMEOUT": "1e300"}, "redis.timeout", "must be ≤ "),
        (
            {"AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS": "2.5"},
            "resilience.retry_max_attempts",
            "must be an integer (got float)",
        ),
        ({"AI_TRADER_FEATURES__DEBUG": '"maybe"'}, "features.debug", "must be a boolean"),
        (
            {"AI_TRADER_TRADING__MAX_ORDER_RATE": "lots per hour"},
            "trading.max_order_rate",
            "is not a rate",
        ),
        ({"AI_TRADER_ALERTS": "3"}, "alerts", "must be a table of settings"),
        ({"AI_TRADER_REDIS": "3"}, "redis", "must be a table of settings"),
    ],
)
def test_each_broken_value_is_named(
    tmp_path: Path, environ: dict[str, str], key: str, rule: str
) -> None:
    problems = _problems(tmp_path, environ)
    assert len(problems) == 1
    assert problems[0][0] == key
    assert problems[0][1].startswith(rule)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        {"AI_TRADER_REDIS__TIMEOUT": "nan", "AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS": "2.5"},
    )
    assert sorted(k for k, _ in problems) == ["redis.timeout", "resilience.retry_max_attempts"]


def test_unknown_environment(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {}, env="moon")
    assert problems == [("AI_TRADER_ENV", "unknown environment 'moon'")]


def test_boolean_written_as_one_or_zero(tmp_path: Path) -> None:
    on = ConfigManager("development", cwd=tmp_path, environ={"AI_TRADER_FEATURES__DEBUG": "1"})
    off = ConfigManager("development", cwd=tmp_path, environ={"AI_TRADER_FEATURES__DEBUG": "0"})
    assert on.load_config().features.debug is True
    assert off.load_config().features.debug is False


def test_error_message_names_the_environment_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ConfigManager(
            "staging", cwd=tmp_path, environ={"AI_TRADER_REDIS__TIMEOUT": "nan"}
        ).load_config()
    text = str(info.value)
    assert "environment 'staging'" in text
    assert "redis.timeout" in text and "Fix:" in text


def test_process_manager_follows_the_process_configuration() -> None:
    manager = ConfigManager()
    assert manager.env == "testing"
    assert manager.load_config() is current_config()
    raw = manager.raw()
    assert "redis" in {str(k).lower() for k in raw}
    assert manager.reload() is current_config()
    assert any(s.kind == "defaults" for s in manager.sources())


def test_standalone_manager_reads_its_own_environment(tmp_path: Path) -> None:
    manager = ConfigManager(cwd=tmp_path, environ={"AI_TRADER_ENV": "Staging"})
    assert manager.env == "staging"
    config = manager.reload()
    assert config.env == "staging"
    assert config is not current_config()
    raw = manager.raw()
    assert "resilience" in {str(k).lower() for k in raw}
    fresh = ConfigManager(cwd=tmp_path, environ={"AI_TRADER_ENV": "staging"}).raw()
    assert {str(k).lower() for k in fresh} == {str(k).lower() for k in raw}


def test_subscribers_hear_reloads_and_a_failing_one_does_not_break_them() -> None:
    seen: list[Config] = []

    def broken(config: Config) -> None:
        raise RuntimeError("subscriber bug")

    stop_broken = ConfigManager().subscribe(broken)
    stop = subscribe(seen.append)
    try:
        config = reload_config()
    finally:
        stop()
        stop_broken()
        stop()  # unsubscribing twice is harmless
    assert seen == [config]
    reload_config()
    assert seen == [config]


@pytest.mark.parametrize(
    ("toml", "key", "rule"),
    [
        ('[default.features]\ndebug = "yes"\n', "features.debug", "must be a boolean"),
        ("[default.redis]\ntimeout = 1e9\n", "redis.timeout", "must be ≤ "),
        ("[default.redis]\nkey_prefix = 5\n", "redis.key_prefix", "must be a string (got int)"),
        ("[default]\nextra_sections = 3\n", "extra_sections", "must be a list of section names"),
        ('[default.redis]\nkey_prefix = "  "\n', "redis.key_prefix", "must not be empty"),
    ],
)
def test_broken_values_in_a_settings_file(tmp_path: Path, toml: str, key: str, rule: str) -> None:
    (tmp_path / "settings.toml").write_text(toml, encoding="utf-8")
    problems = _problems(tmp_path, {})
    assert problems[0][0] == key
    assert problems[0][1].startswith(rule)


def test_a_boolean_written_as_one_in_a_settings_file(tmp_path: Path) -> None:
    (tmp_path / "settings.toml").write_text("[default.features]\ndebug = 1\n", encoding="utf-8")
    config = ConfigManager("development", cwd=tmp_path, environ={}).load_config()
    assert config.features.debug is True
