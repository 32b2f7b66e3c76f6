"""The process configuration: lazy load, validation, reload and subscribers."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from dynaconf import Dynaconf

from .._sanitize import register_secrets
from ._loader import build_settings, current_env, env_problems, settings_dict
from ._schema import Config, validate
from ._switches import switches

__all__ = ["ConfigManager", "current_config", "reload_config", "settings", "subscribe"]

Subscriber = Callable[[Config], None]


class _LayeredSettings(Dynaconf):  # type: ignore[misc]
    """The dynaconf instance users import; built by :func:`build_settings` on first access."""

    def _setup(self) -> None:
        object.__setattr__(self, "_wrapped", build_settings()._wrapped)

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


def _validated(dyn: Dynaconf, environ: Mapping[str, str] | None = None) -> Config:
    env = str(dyn.current_env).lower()
    return validate(settings_dict(dyn), env, env_problems(environ, env))


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
            _install(_validated(settings))
        assert _current is not None
        return _current


def reload_config() -> Config:
    """Re-read every layer, validate, install and notify subscribers.

    An invalid new configuration raises :class:`ConfigError` and leaves the running one in place.
    """
    with _lock:
        fresh = build_settings()
        config = _validated(fresh)
        settings._replace(fresh)
        _install(config)
        subscribers = list(_subscribers)
    from .._logging import logger

    for callback in subscribers:
        try:
            callback(config)
        except Exception as exc:  # a subscriber must not break a reload
            logger.opt(exception=exc).error("configuration subscriber {} failed", callback)
    return config


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
        dyn = build_settings(self._env, cwd=self._cwd, environ=self._environ)
        config = _validated(dyn, self._environ)
        register_secrets(config.secret_values())
        self._settings = dyn
        return config

    def raw(self) -> dict[str, Any]:
        """The merged, unvalidated settings as plain data (secrets not yet masked)."""
        if not self._standalone:
            return settings_dict(settings)
        dyn = self._settings or build_settings(self._env, cwd=self._cwd, environ=self._environ)
        return settings_dict(dyn)

    def reload(self) -> Config:
        """Reload (the process configuration, or this standalone one) and return it."""
        if not self._standalone:
            return reload_config()
        return self.load_config()

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Be told of every reload of the process configuration."""
        return subscribe(callback)
