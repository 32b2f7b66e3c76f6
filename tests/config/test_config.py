"""Layered configuration: defaults, files, YAML per environment, env vars, validation, reload."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from resilient import ConfigError, sanitize
from resilient._cli import main as cli_main
from resilient.config import (
    DEFAULTS_FILE,
    ConfigManager,
    build_settings,
    current_config,
    reload_config,
    settings,
    subscribe,
    switches,
)

REPO = Path(__file__).resolve().parents[2]
GUIDE_YAML = """\
# config/config.production.yaml
resilience:
  circuit_breaker_enabled: true
  circuit_breaker_failure_threshold: 5
  circuit_breaker_timeout: 60.0
  retry_enabled: true
  retry_max_attempts: 3
  health_check_enabled: true
  health_check_interval: 30.0

trading:
  max_order_size: 10000.0
  risk_check_enabled: true

features:
  paper_trading_enabled: false
  live_trading_enabled: true
  risk_limits_enforced: true
"""


def load(env: str = "development", cwd: Path | None = None, **environ: str):  # type: ignore[no-untyped-def]
    return ConfigManager(env, cwd=cwd or Path("/nonexistent-resilient-dir"), environ=environ)


def test_guide_defaults_from_any_directory(tmp_path: Path) -> None:
    """With no settings file in the working directory every key has the guide's default."""
    cfg = load("staging", cwd=tmp_path).load_config()
    r, d, t = cfg.resilience, cfg.database, cfg.trading
    assert (r.circuit_breaker_enabled, r.circuit_breaker_failure_threshold) == (True, 5)
    assert (r.circuit_breaker_timeout, r.retry_enabled, r.retry_max_attempts) == (60.0, True, 3)
    assert (r.retry_initial_delay, r.health_check_enabled, r.health_check_interval) == (
        1.0,
        True,
        30.0,
    )
    assert r.enable_query_logging is False
    assert (d.min_pool_size, d.max_pool_size, d.max_idle_time) == (5, 20, 300.0)
    assert (d.command_timeout, d.pool_pre_ping, d.slow_query_threshold) == (60.0, True, 1.0)
    assert (t.max_order_size, t.max_position_size) == (10000.0, 100000.0)
    assert (t.risk_check_enabled, t.default_order_timeout) == (True, 30.0)
    assert cfg.redis.url is None
    assert cfg.features.risk_limits_enforced is True


def test_environment_overrides() -> None:
    """Development allows debug with paper trading; production requires SSL and live trading."""
    dev = load("development").load_config()
    assert dev.features.debug and dev.features.paper_trading_enabled
    assert not dev.features.live_trading_enabled
    prod = load("production").load_config()
    assert prod.database.ssl_mode == "require" and not prod.features.debug
    assert prod.features.live_trading_enabled and not prod.features.paper_trading_enabled


def test_env_switcher_selects_environment() -> None:
    """AI_TRADER_ENV chooses the environment; development is the default."""
    assert ConfigManager(environ={}, cwd="/nonexistent").load_config().env == "development"
    cfg = ConfigManager(environ={"AI_TRADER_ENV": "staging"}, cwd="/nonexistent").load_config()
    assert cfg.env == "staging"


@pytest.mark.parametrize(
    ("var", "key", "raw", "expected"),
    [
        ("AI_TRADER_DATABASE_HOST", "host", "db.internal", "db.internal"),
        ("AI_TRADER_DATABASE_PORT", "port", "6543", 6543),
        ("AI_TRADER_DATABASE_NAME", "name", "ai_trader", "ai_trader"),
        ("AI_TRADER_DATABASE_USER", "user", "trader", "trader"),
        ("AI_TRADER_DATABASE_PASSWORD", "password", "0123", "0123"),
    ],
)
def test_guide_database_env_names(var: str, key: str, raw: str, expected: object) -> None:
    """The guide's documented AI_TRADER_DATABASE_* names set database.* (not a flat key)."""
    manager = load(**{var: raw})
    cfg = manager.load_config()
    assert getattr(cfg.database, key) == expected
    assert "database_" + key not in manager.raw()


def test_nested_env_form_and_precedence() -> None:
    """AI_TRADER_SECTION__KEY works and wins over the flat documented form."""
    cfg = load(
        AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS="7",
        AI_TRADER_DATABASE_PORT="1111",
        AI_TRADER_DATABASE__PORT="2222",
    ).load_config()
    assert cfg.resilience.retry_max_attempts == 7
    assert cfg.database.port == 2222


def test_guide_yaml_takes_effect_in_production(tmp_path: Path) -> None:
    """config/config.production.yaml, saved verbatim from the guide, is layered in production."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.production.yaml").write_text(
        GUIDE_YAML.replace("retry_max_attempts: 3", "retry_max_attempts: 2").replace(
            "max_order_size: 10000.0", "max_order_size: 5000.0"
        )
    )
    cfg = load("production", cwd=tmp_path).load_config()
    assert cfg.resilience.retry_max_attempts == 2
    assert cfg.trading.max_order_size == 5000.0
    assert load("staging", cwd=tmp_path).load_config().trading.max_order_size == 10000.0


def test_repository_yaml_is_the_guide_verbatim() -> None:
    """The repository ships the guide's YAML example unchanged."""
    assert (REPO / "config" / "config.production.yaml").read_text() == GUIDE_YAML


def test_precedence_files_yaml_env(tmp_path: Path) -> None:
    """settings.toml < .secrets.toml < YAML < environment variables."""
    (tmp_path / "settings.toml").write_text(
        textwrap.dedent("""
        [default.trading]
        max_order_size = 100.0
        default_order_timeout = 11.0
        [default.database]
        user = "from_settings"
    """)
    )
    (tmp_path / ".secrets.toml").write_text(
        textwrap.dedent("""
        [default.database]
        user = "from_secrets"
        [default.trading]
        default_order_timeout = 12.0
    """)
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.staging.yaml").write_text(
        "trading:\n  default_order_timeout: 13.0\n  max_order_size: 200.0\n"
    )
    cfg = load("staging", cwd=tmp_path, AI_TRADER_TRADING__MAX_ORDER_SIZE="300").load_config()
    assert cfg.database.user == "from_secrets"
    assert cfg.trading.default_order_timeout == 13.0
    assert cfg.trading.max_order_size == 300.0


def test_repository_settings_is_the_package_defaults() -> None:
    """The repository's settings.toml and the built-in defaults are one file."""
    assert (REPO / "settings.toml").resolve() == DEFAULTS_FILE.resolve()


# ---- invalid configurations, table-driven -------------------------------------------------

INVALID: list[tuple[str, dict[str, str], str, str]] = [
    # (environment, variables, key named in the error, words of the rule)
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_FAILURE_THRESHOLD": "0"},
        "resilience.circuit_breaker_failure_threshold",
        "≥ 1",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_FAILURE_THRESHOLD": "-3"},
        "resilience.circuit_breaker_failure_threshold",
        "≥ 1",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_FAILURE_THRESHOLD": "2.5"},
        "resilience.circuit_breaker_failure_threshold",
        "integer",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_TIMEOUT": "0"},
        "resilience.circuit_breaker_timeout",
        "> 0",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_TIMEOUT": "soon"},
        "resilience.circuit_breaker_timeout",
        "number",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_ENABLED": "maybe"},
        "resilience.circuit_breaker_enabled",
        "boolean",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS": "0"},
        "resilience.retry_max_attempts",
        "≥ 1",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS": "1000"},
        "resilience.retry_max_attempts",
        "≤ 100",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_INITIAL_DELAY": "-1"},
        "resilience.retry_initial_delay",
        "≥ 0",
    ),
    (
        "development",
        {
            "AI_TRADER_RESILIENCE__RETRY_INITIAL_DELAY": "5",
            "AI_TRADER_RESILIENCE__RETRY_MAX_DELAY": "1",
        },
        "resilience.retry_max_delay",
        "retry_initial_delay",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_ENABLED": "[1]"},
        "resilience.retry_enabled",
        "boolean",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_BUDGET_RATIO": "1.5"},
        "resilience.retry_budget_ratio",
        "≤ 1",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__HEALTH_CHECK_INTERVAL": "0"},
        "resilience.health_check_interval",
        "> 0",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__HEALTH_CHECK_INTERVAL": "inf"},
        "resilience.health_check_interval",
        "number",
    ),
    (
        "development",
        {"AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPS": "3"},
        "resilience.retry_max_attemps",
        "did you mean resilience.retry_max_attempts",
    ),
    ("development", {"AI_TRADER_DATABASE_PORT": "0"}, "database.port", "≥ 1"),
    ("development", {"AI_TRADER_DATABASE_PORT": "70000"}, "database.port", "≤ 65535"),
    ("development", {"AI_TRADER_DATABASE_PORT": "fivefourthreetwo"}, "database.port", "integer"),
    ("development", {"AI_TRADER_DATABASE_NAME": "  "}, "database.name", "empty"),
    (
        "development",
        {"AI_TRADER_DATABASE__MIN_POOL_SIZE": "30"},
        "database.min_pool_size",
        "max_pool_size",
    ),
    ("development", {"AI_TRADER_DATABASE__MIN_POOL_SIZE": "0"}, "database.min_pool_size", "≥ 1"),
    ("development", {"AI_TRADER_DATABASE__MAX_IDLE_TIME": "-5"}, "database.max_idle_time", "> 0"),
    (
        "development",
        {"AI_TRADER_DATABASE__COMMAND_TIMEOUT": "0"},
        "database.command_timeout",
        "> 0",
    ),
    (
        "development",
        {"AI_TRADER_DATABASE__SLOW_QUERY_THRESHOLD": "0"},
        "database.slow_query_threshold",
        "> 0",
    ),
    ("development", {"AI_TRADER_DATABASE__SSL_MODE": "strict"}, "database.ssl_mode", "one of"),
    (
        "development",
        {"AI_TRADER_DATABASE__POOL_PRE_PING": "sometimes"},
        "database.pool_pre_ping",
        "boolean",
    ),
    (
        "development",
        {"AI_TRADER_DATABASE_HOSTNAME": "db"},
        "AI_TRADER_DATABASE_HOSTNAME",
        "AI_TRADER_DATABASE_HOST",
    ),
    ("development", {"AI_TRADER_REDIS__URL": "http://cache:6379"}, "redis.url", "redis://"),
    ("development", {"AI_TRADER_REDIS__TIMEOUT": "30"}, "redis.timeout", "≤ 5"),
    (
        "development",
        {"AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_SHARED": "true"},
        "resilience.circuit_breaker_shared",
        "redis.url",
    ),
    ("development", {"AI_TRADER_TRADING__MAX_ORDER_SIZE": "0"}, "trading.max_order_size", "> 0"),
    (
        "development",
        {"AI_TRADER_TRADING__MAX_ORDER_SIZE": "500000"},
        "trading.max_order_size",
        "max_position_size",
    ),
    (
        "development",
        {"AI_TRADER_TRADING__DEFAULT_ORDER_TIMEOUT": "-1"},
        "trading.default_order_timeout",
        "> 0",
    ),
    (
        "development",
        {"AI_TRADER_TRADING__RISK_CHECK_ENABLED": '"yes please"'},
        "trading.risk_check_enabled",
        "boolean",
    ),
    (
        "development",
        {"AI_TRADER_FEATURES__LIVE_TRADING_ENABLED": "true"},
        "features.live_trading_enabled",
        "both be enabled",
    ),
    ("production", {"AI_TRADER_FEATURES__DEBUG": "true"}, "features.debug", "production"),
    ("production", {"AI_TRADER_DATABASE__SSL_MODE": "prefer"}, "database.ssl_mode", "production"),
    ("production", {"AI_TRADER_DATABASE__SSL_MODE": "disable"}, "database.ssl_mode", "production"),
    ("development", {"AI_TRADER_LOG_LEVEL": "LOUD"}, "log_level", "one of"),
    ("qa", {}, "AI_TRADER_ENV", "unknown environment"),
]


@pytest.mark.parametrize(
    ("env", "environ", "key", "rule"),
    INVALID,
    ids=[f"{i:02d}-{row[2]}" for i, row in enumerate(INVALID)],
)
def test_invalid_configuration_is_refused(
    env: str, environ: dict[str, str], key: str, rule: str
) -> None:
    """Each invalid configuration raises ConfigError naming environment, key, rule and fix."""
    with pytest.raises(ConfigError) as info:
        load(env, **environ).load_config()
    message = str(info.value)
    assert f"[{env}]" in message
    assert key in message
    assert rule in message
    assert "Fix:" in message
    assert any(p.key == key for p in info.value.problems)


def test_invalid_yaml_and_unknown_key_in_file(tmp_path: Path) -> None:
    """Broken YAML and unknown keys in files are refused with the file or key named."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.testing.yaml").write_text("resilience: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load("testing", cwd=tmp_path).load_config()
    (tmp_path / "config" / "config.testing.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load("testing", cwd=tmp_path).load_config()
    (tmp_path / "config" / "config.testing.yaml").write_text("trading:\n  max_ordr_size: 5\n")
    with pytest.raises(ConfigError, match=r"did you mean trading\.max_order_size"):
        load("testing", cwd=tmp_path).load_config()


def test_all_problems_reported_at_once() -> None:
    """Several mistakes give one error listing each of them."""
    with pytest.raises(ConfigError) as info:
        load(
            "production",
            AI_TRADER_FEATURES__DEBUG="true",
            AI_TRADER_DATABASE_PORT="0",
            AI_TRADER_TRADING__MAX_ORDER_SIZE="-1",
        ).load_config()
    keys = {p.key for p in info.value.problems}
    assert {"features.debug", "database.port", "trading.max_order_size"} <= keys


# ---- secrets ---------------------------------------------------------------------------------

# No URL delimiters (@ / ? # : [ ]): the fragments of a URL password holding them are registered
# as secrets for the whole session (test_config_hostile covers them with distinctive fragments).
secret_text = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\"'\\@/?#:[]"),
    min_size=8,
    max_size=40,
).map(lambda s: f"Zq{s}9#")  # never a word that ordinary output contains


@hsettings(max_examples=60)
@given(password=secret_text)
def test_password_never_in_errors_or_dumps(password: str) -> None:
    """A generated password never appears in ConfigError text, reprs or the config dump."""
    bad = load(
        "production",
        AI_TRADER_DATABASE_PASSWORD=password,
        AI_TRADER_DATABASE__SSL_MODE="disable",
        AI_TRADER_FEATURES__DEBUG="true",
    )
    with pytest.raises(ConfigError) as info:
        bad.load_config()
    assert password not in str(info.value)
    good = load("staging", AI_TRADER_DATABASE_PASSWORD=password)
    cfg = good.load_config()
    assert cfg.database.password == password
    assert password not in repr(cfg) and password not in repr(cfg.database)
    assert password not in sanitize(f"connecting with {password} now")
    from resilient._cli.config_cmd import masked_dict

    assert password not in json.dumps(masked_dict(cfg))


@hsettings(max_examples=40)
@given(password=secret_text)
def test_redis_url_password_masked(password: str) -> None:
    """A password inside redis.url never appears in reprs or dumps."""
    url = f"redis://user:{password}@cache.internal:6379/0"
    cfg = load("staging", AI_TRADER_REDIS__URL=url).load_config()
    assert cfg.redis.url == url
    assert password not in repr(cfg.redis)
    from resilient._cli.config_cmd import masked_dict

    assert password not in json.dumps(masked_dict(cfg))


def test_cli_config_masks_secrets_and_validates(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`resilient config` prints every section with the password masked; --validate exits 0/2."""
    secret = "Sup3r-Secret-Value-42"
    monkeypatch.setenv("AI_TRADER_DATABASE_PASSWORD", secret)
    assert cli_main(["config", "--env", "staging"]) == 0
    out = capsys.readouterr().out
    assert secret not in out
    assert 'password = "***"' in out and "[trading]" in out and "AI_TRADER_DATABASE__PORT" in out
    assert cli_main(["config", "--env", "staging", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["database"]["password"] == "***"
    assert cli_main(["config", "--env", "staging", "--validate"]) == 0
    assert "is valid" in capsys.readouterr().out
    monkeypatch.setenv("AI_TRADER_DATABASE__SSL_MODE", "bogus")
    assert cli_main(["config", "--env", "staging", "--validate"]) == 2
    err = capsys.readouterr().err
    assert "database.ssl_mode" in err and secret not in err


# ---- process configuration, reload and switches -------------------------------------------


def test_process_settings_is_dynaconf_with_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """`settings` is a dynaconf instance showing the process environment's values."""
    assert settings.resilience.retry_max_attempts == current_config().resilience.retry_max_attempts
    assert str(settings.current_env).lower() == os.environ.get("AI_TRADER_ENV", "development")


def test_reload_revalidates_notifies_and_refreshes_switches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reload installs the new values, flips switches and notifies subscribers; an invalid
    reload raises and keeps the running configuration."""
    seen: list[int] = []
    unsubscribe = subscribe(lambda cfg: seen.append(cfg.resilience.retry_max_attempts))
    try:
        before = current_config()
        generation = switches.generation
        monkeypatch.setenv("AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS", "9")
        monkeypatch.setenv("AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_ENABLED", "false")
        cfg = reload_config()
        assert cfg.resilience.retry_max_attempts == 9 and seen == [9]
        assert switches.breaker_enabled is False and switches.generation == generation + 1
        assert settings.resilience.retry_max_attempts == 9
        monkeypatch.setenv("AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS", "0")
        with pytest.raises(ConfigError):
            reload_config()
        assert current_config().resilience.retry_max_attempts == 9
    finally:
        unsubscribe()
        monkeypatch.delenv("AI_TRADER_RESILIENCE__RETRY_MAX_ATTEMPTS")
        monkeypatch.delenv("AI_TRADER_RESILIENCE__CIRCUIT_BREAKER_ENABLED")
        reload_config()
    assert switches.breaker_enabled is True
    assert current_config().resilience.retry_max_attempts == before.resilience.retry_max_attempts


def test_failing_subscriber_does_not_break_reload() -> None:
    """A subscriber that raises is logged and the reload still succeeds."""
    calls: list[str] = []

    def broken(_cfg: object) -> None:
        raise RuntimeError("boom")

    unsubscribe_a = subscribe(broken)
    unsubscribe_b = subscribe(lambda _cfg: calls.append("ok"))
    try:
        reload_config()
    finally:
        unsubscribe_a()
        unsubscribe_b()
    assert calls == ["ok"]


def test_build_settings_layers_secrets_file(tmp_path: Path) -> None:
    """The .secrets.toml placeholder layer is read per environment."""
    (tmp_path / ".secrets.toml").write_text('[testing.database]\npassword = "placeholder-pw"\n')
    dyn = build_settings("testing", cwd=tmp_path, environ={})
    assert dyn.database.password == "placeholder-pw"


def test_readme_documents_every_key() -> None:
    """The README's configuration reference names every key and its variable."""
    from dataclasses import fields

    from resilient.config._schema import SECTIONS

    readme = (REPO / "README.md").read_text()
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            assert f"`{section}.{f.name}`" in readme, f"{section}.{f.name} missing from README"
            assert f"AI_TRADER_{section.upper()}__{f.name.upper()}" in readme


def test_redis_url_password_is_registered_alone() -> None:
    """secret_values() holds the redis.url password by itself, so it is masked anywhere."""
    password = "Zq-p@ss/word-9#"
    url = f"redis://user:{password}@cache.internal:6379/0"
    cfg = load("staging", AI_TRADER_REDIS__URL=url).load_config()
    values = cfg.secret_values()
    assert url in values and password in values
    bare = "redis://cache.internal:6379/0"
    plain = load("staging", AI_TRADER_REDIS__URL=bare).load_config()
    assert [v for v in plain.secret_values() if v in bare] == [bare]  # no fragment of it
