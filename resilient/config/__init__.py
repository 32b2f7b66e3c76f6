"""Layered configuration: built-in defaults, settings files, YAML per environment, env vars.

``settings`` is the dynaconf instance; :class:`ConfigManager` validates it into a
:class:`Config` and notifies subscribers when it is reloaded.
"""

from __future__ import annotations

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.log import set_defaults_source as _set_defaults_source
from resilient.config._loader import DEFAULTS_FILE, ENV_PREFIX, Source, build_settings, current_env
from resilient.config._manager import (
    ConfigManager,
    configure,
    current_config,
    reload_config,
    settings,
    subscribe,
)
from resilient.config._schema import (
    ENVIRONMENTS,
    Config,
    DatabaseSettings,
    FeatureSettings,
    RedisSettings,
    ResilienceSettings,
    TradingSettings,
)
from resilient.config._switches import switches

__all__ = [
    "DEFAULTS_FILE",
    "ENVIRONMENTS",
    "ENV_PREFIX",
    "Config",
    "ConfigError",
    "ConfigManager",
    "ConfigProblem",
    "DatabaseSettings",
    "FeatureSettings",
    "RedisSettings",
    "ResilienceSettings",
    "Source",
    "TradingSettings",
    "build_settings",
    "configure",
    "current_config",
    "current_env",
    "reload_config",
    "settings",
    "subscribe",
    "switches",
]


def _log_defaults() -> tuple[str, bool]:
    """``enable_logging()``'s defaults: the settings' level (DEBUG with ``features.debug``),
    JSON lines in staging and production."""
    config = current_config()
    level = "DEBUG" if config.features.debug else config.log_level
    return level, config.env in ("staging", "production")


_set_defaults_source(_log_defaults)
