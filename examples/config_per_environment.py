"""Configuration per environment with the deployment guide's YAML.

Writes ``config/config.production.yaml`` (the guide's file) and a staging file into a scratch
directory, then loads each environment the way a deployment would (``AI_TRADER_ENV`` plus
``AI_TRADER_*`` variables) and shows what an invalid value produces.

Run: python examples/config_per_environment.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from resilient.config import ConfigError, ConfigManager

PRODUCTION_YAML = """\
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

STAGING_YAML = """\
resilience:
  circuit_breaker_failure_threshold: 3
services:
  main_broker:
    rate_limit: "150/minute"
    resilience_enabled: false   # canary: resilience off for this service in staging
"""

# The guide's environment variables (section 3), as a deployment would set them.
PRODUCTION_ENV = {
    "AI_TRADER_ENV": "production",
    "AI_TRADER_DATABASE_HOST": "db.internal",
    "AI_TRADER_DATABASE_PORT": "5432",
    "AI_TRADER_DATABASE_NAME": "ai_trader",
    "AI_TRADER_DATABASE_USER": "trader",
    "AI_TRADER_DATABASE_PASSWORD": "s3cret-from-the-vault",
}


def main(root: Path) -> None:
    (root / "config").mkdir()
    (root / "config" / "config.production.yaml").write_text(PRODUCTION_YAML)
    (root / "config" / "config.staging.yaml").write_text(STAGING_YAML)

    for env, environ in (
        ("development", {}),
        ("staging", {"AI_TRADER_ENV": "staging"}),
        ("production", PRODUCTION_ENV),
    ):
        config = ConfigManager(env, cwd=root, environ=environ).load_config()
        print(
            f"{env:<12} live={config.features.live_trading_enabled!s:<5} "
            f"paper={config.features.paper_trading_enabled!s:<5} "
            f"breaker threshold={config.resilience.circuit_breaker_failure_threshold} "
            f"db={config.database!r}"
        )
        if env == "staging":
            broker = config.section("services")["main_broker"]
            print(f"{'':<12} services.main_broker = {dict(broker)}")
            assert broker["resilience_enabled"] is False
        if env == "production":
            assert config.features.live_trading_enabled
            assert config.database.host == "db.internal"
            assert "s3cret" not in repr(config.database)  # secrets never shown

    # An environment variable overrides the YAML; a bad value names the key, rule and fix.
    bad = dict(PRODUCTION_ENV, AI_TRADER_TRADING__MAX_ORDER_SIZE="-5")
    problem: ConfigError | None = None
    try:
        ConfigManager("production", cwd=root, environ=bad).load_config()
    except ConfigError as exc:
        problem = exc
    assert problem is not None, "a negative max_order_size must be refused"
    print(f"invalid configuration is refused at load:\n{problem}")
    assert problem.problems[0].key == "trading.max_order_size"
    assert "s3cret" not in str(problem)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="resilient-config-") as scratch:
        main(Path(scratch))
