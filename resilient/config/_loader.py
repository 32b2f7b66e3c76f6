"""Builds the layered dynaconf settings.

Layers, lowest to highest: the package's built-in ``settings.toml``, ``./settings.toml``,
``./.secrets.toml``, ``./config/config.<env>.yaml``, then ``AI_TRADER_*`` environment variables.
dynaconf's own environment loader is switched off because it would put the guide's documented
names (``AI_TRADER_DATABASE_HOST``) into a flat ``DATABASE_HOST`` key and could not place the
YAML file below the environment variables; this module applies both itself.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml
from dynaconf import Dynaconf
from dynaconf.utils.parse_conf import parse_conf_data

from .._exceptions import ConfigError, ConfigProblem
from .._sanitize import is_secret_key
from ._schema import ENVIRONMENTS, SECTIONS

__all__ = [
    "DEFAULTS_FILE",
    "ENV_PREFIX",
    "ENV_SWITCHER",
    "build_settings",
    "current_env",
    "env_problems",
    "settings_dict",
]

ENV_PREFIX = "AI_TRADER_"
ENV_SWITCHER = "AI_TRADER_ENV"
DEFAULT_ENV = "development"
DEFAULTS_FILE = Path(__file__).with_name("settings.toml")
_INTERNAL = {"LOAD_DOTENV", "ENV", "ENVIRONMENTS_FOR_DYNACONF", "ENV_FOR_DYNACONF"}


def current_env(environ: Mapping[str, str] | None = None) -> str:
    """The environment named by ``AI_TRADER_ENV`` (``development`` when unset)."""
    environ = os.environ if environ is None else environ
    return (environ.get(ENV_SWITCHER) or DEFAULT_ENV).strip().lower()


def _section_keys() -> dict[str, set[str]]:
    return {name: {f.name for f in fields(cls)} for name, cls in SECTIONS.items()}


def _env_assignments(
    environ: Mapping[str, str], env: str
) -> tuple[list[tuple[str, Any]], list[ConfigProblem]]:
    """``AI_TRADER_*`` variables as (dotted key, parsed value) pairs, in precedence order."""
    known = _section_keys()
    nested: list[tuple[str, Any]] = []
    flat: list[tuple[str, Any]] = []
    problems: list[ConfigProblem] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == ENV_SWITCHER:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        raw = environ[name]
        if "__" in rest:  # dynaconf's nested form: AI_TRADER_SECTION__KEY[__SUB]
            key = ".".join(part for part in rest.split("__") if part)
            nested.append((key, raw))
            continue
        section = next((s for s in known if rest.startswith(s + "_")), None)
        if section is not None:  # the guide's form: AI_TRADER_DATABASE_HOST
            leaf = rest[len(section) + 1 :]
            if leaf in known[section]:
                flat.append((f"{section}.{leaf}", raw))
            else:
                close = difflib.get_close_matches(leaf, known[section], n=1)
                fix = (
                    f"did you mean AI_TRADER_{section.upper()}_{close[0].upper()}?"
                    if close
                    else f"known keys: {', '.join(sorted(known[section]))}"
                )
                problems.append(
                    ConfigProblem(
                        key=name, rule=f"names no known {section} setting", fix=fix, env=env
                    )
                )
            continue
        flat.append((rest, raw))  # a top-level key such as AI_TRADER_LOG_LEVEL
    # The nested form is the more specific one, so it wins over the guide's flat names.
    pairs = [(k, _parse(k, v)) for k, v in flat + nested]
    return pairs, problems


def _parse(key: str, raw: str) -> Any:
    leaf = key.rsplit(".", 1)[-1]
    if is_secret_key(leaf) or key == "redis.url":
        return raw  # never reinterpret a secret: "0123" stays a string
    return parse_conf_data(raw, tomlfy=True)


def _load_yaml(path: Path, env: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            [
                ConfigProblem(
                    key=str(path),
                    rule=f"is not valid YAML{where}",
                    fix="correct the YAML syntax",
                    env=env,
                )
            ]
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                ConfigProblem(
                    key=str(path),
                    rule="must hold a mapping of sections",
                    fix="write sections such as 'resilience:' at the top",
                    env=env,
                )
            ]
        )
    return data


def build_settings(
    env: str | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Dynaconf:
    """A fully layered dynaconf instance for ``env`` (from ``AI_TRADER_ENV`` when omitted)."""
    environ = os.environ if environ is None else environ
    env = (env or current_env(environ)).lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(
            [
                ConfigProblem(
                    key=ENV_SWITCHER,
                    rule=f"unknown environment {env!r}",
                    fix=f"set AI_TRADER_ENV to one of {', '.join(ENVIRONMENTS)}",
                    env=env,
                )
            ],
            env=env,
        )
    base = Path(cwd) if cwd is not None else Path.cwd()
    files = [str(DEFAULTS_FILE)]
    for name in ("settings.toml", ".secrets.toml"):
        candidate = base / name
        if candidate.is_file() and candidate.resolve() != DEFAULTS_FILE.resolve():
            files.append(str(candidate))
    dyn = Dynaconf(
        environments=True,
        env=env,
        settings_files=files,
        merge_enabled=True,
        load_dotenv=False,
        loaders=[],
        envvar_prefix=False,
        root_path=str(base),
    )
    dyn.setenv(env)
    yaml_file = base / "config" / f"config.{env}.yaml"
    if yaml_file.is_file():
        data = _load_yaml(yaml_file, env)
        dyn.update(data, merge=True)
    pairs, _ = _env_assignments(environ, env)
    for key, value in pairs:
        dyn.set(key, value)
    return dyn


def env_problems(environ: Mapping[str, str] | None, env: str) -> list[ConfigProblem]:
    """``AI_TRADER_*`` variables that name no known setting (reported with the other problems)."""
    return _env_assignments(os.environ if environ is None else environ, env)[1]


def settings_dict(dyn: Dynaconf) -> dict[str, Any]:
    """The user-visible settings of ``dyn`` as plain lower-case nested data."""
    out: dict[str, Any] = {}
    for key, value in dyn.as_dict().items():
        if key in _INTERNAL or key.endswith("_FOR_DYNACONF"):
            continue
        out[key.lower()] = value
    return out
