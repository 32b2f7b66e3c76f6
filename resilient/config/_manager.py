"""The process configuration: lazy load, validation, reload and subscribers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dynaconf import Dynaconf

from resilient._core.log import logger
from resilient._core.sanitize import register_secrets
from resilient.config._loader import (
    DEFAULTS_FILE,
    Layers,
    Source,
    build_from,
    current_env,
    load_layers,
    restore_process_options,
    set_process_options,
    settings_dict,
)
from resilient.config._schema import Config, validate
from resilient.config._switches import switches

__all__ = [
    "ConfigManager",
    "configure",
    "current_config",
    "reload_config",
    "settings",
    "subscribe",
]

Subscriber = Callable[[Config], None]


class _LayeredSettings(Dynaconf):  # type: ignore[misc]
    """The dynaconf instance users import; built by :func:`build_settings` on first access."""

    def _setup(self) -> None:
        object.__setattr__(self, "_wrapped", build_from(load_layers())._wrapped)

    def _replace(self, fresh: Dynaconf) -> None:
        fresh.get("log_level")  # force the fresh instance to load
        object.__setattr__(self, "_wrapped", fresh._wrapped)


settings: Dynaconf = _LayeredSettings()

_lock = threading.RLock()
_current: Config | None = None
_subscribers: list[Subscriber] = []


def _install(config: Config) -> None:
    global _current
    register_secrets(config.secret_values())
    _current = config
    switches.breaker_enabled = config.resilience.circuit_breaker_enabled
    switches.retry_enabled = config.resilience.retry_enabled
    switches.generation += 1


def _validated(dyn: Dynaconf, layers: Layers) -> Config:
    env = str(dyn.current_env).lower()
    builtin = next((data for path, data in layers.files if path == DEFAULTS_FILE), {})
    known = {str(k).lower() for k in builtin.get("default", {})}
    return validate(
        settings_dict(dyn),
        env,
        layers.problems,
        known_sections=known,
        origin=layers.origin,
    )


def _load(
    env: str | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Dynaconf, Config, Layers]:
    layers = load_layers(env, cwd=cwd, environ=environ)
    dyn = build_from(layers)
    return dyn, _validated(dyn, layers), layers


def current_config() -> Config:
    """The validated process configuration, loaded on first use.

    Raises:
        ConfigError: the configuration is invalid.
    """
    config = _current
    if config is not None:
        return config
    with _lock:
        if _current is None:
            fresh, config, _ = _load()
            settings._replace(fresh)
            _install(config)
        assert _current is not None
        return _current


def reload_config() -> Config:
    """Re-read every layer, validate, install and notify subscribers.

    An invalid new configuration raises :class:`ConfigError` and leaves the running one in place.
    """
    with _lock:
        fresh, config, _ = _load()
        settings._replace(fresh)
        _install(config)
        subscribers = list(_subscribers)

    for callback in subscribers:
        try:
            callback(config)
        except Exception as exc:  # a subscriber must not break a reload
            logger.opt(exception=exc).error("configuration subscriber {} failed", callback)
    return config


def configure(
    env: str | None = None,
    *,
    config_dir: str | os.PathLike[str] | None = None,
    settings_files: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] | None = None,
) -> Config:
    """Choose where the process configuration comes from, load it and install it.

    Decorators, the factory and ``settings`` follow it at once (as after
    :func:`reload_config`), and later reloads keep reading the same place. ``configure()``
    with no argument goes back to ``AI_TRADER_ENV``, ``AI_TRADER_SETTINGS_FILES`` /
    ``AI_TRADER_CONFIG_DIR`` and the working directory.

    Args:
        env: the environment (default: ``AI_TRADER_ENV``).
        config_dir: the directory holding ``settings.toml``, ``.secrets.toml`` and
            ``config/config.<env>.yaml`` (instead of the working directory).
        settings_files: TOML files layered over the built-in defaults, in order (instead of
            ``settings.toml`` and ``.secrets.toml``); relative paths are read from
            ``config_dir`` or the working directory.

    Raises:
        ConfigError: the new configuration is invalid; the running one stays in place.
    """
    with _lock:
        token = set_process_options(env, config_dir, settings_files)
        try:
            return reload_config()
        except BaseException:
            restore_process_options(token)
            raise


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Call ``callback(config)`` after every reload; returns a function that unsubscribes."""
    with _lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)

    return unsubscribe


class ConfigManager:
    """Loads and validates configuration (the deployment guide's integration API).

    ``ConfigManager()`` works on the process configuration (``AI_TRADER_ENV``, the working
    directory, ``os.environ``). Passing ``env``, ``cwd`` or ``environ`` builds a separate,
    standalone configuration instead, which is handy for ``resilient config --env`` and tests.
    """

    def __init__(
        self,
        env: str | None = None,
        *,
        cwd: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._standalone = env is not None or cwd is not None or environ is not None
        self._env = env
        self._cwd = cwd
        self._environ = environ
        self._settings: Dynaconf | None = None
        self._layers: Layers | None = None

    @property
    def env(self) -> str:
        """The environment this manager loads."""
        if self._env is not None:
            return self._env.lower()
        return current_env(self._environ)

    def load_config(self) -> Config:
        """The validated configuration.

        Raises:
            ConfigError: naming the environment, each broken key, its rule and the fix.
        """
        if not self._standalone:
            return current_config()
        dyn, config, layers = _load(self._env, cwd=self._cwd, environ=self._environ)
        register_secrets(config.secret_values())
        self._settings = dyn
        self._layers = layers
        return config

    def sources(self) -> list[Source]:
        """Every file and variable this manager's configuration is read from, in the order
        they are applied (lowest first; secret values masked).

        Raises:
            ConfigError: a layer cannot be read.
        """
        if self._layers is None:
            env = self._env if self._standalone else None
            self._layers = load_layers(env, cwd=self._cwd, environ=self._environ)
        return self._layers.sources()

    def raw(self) -> dict[str, Any]:
        """The merged, unvalidated settings as plain data (secrets not yet masked)."""
        if not self._standalone:
            return settings_dict(settings)
        dyn = self._settings or build_from(
            load_layers(self._env, cwd=self._cwd, environ=self._environ)
        )
        return settings_dict(dyn)

    def reload(self) -> Config:
        """Reload (the process configuration, or this standalone one) and return it."""
        if not self._standalone:
            return reload_config()
        return self.load_config()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Be told of every reload of the process configuration."""
        return subscribe(callback)
