"""Builds the layered dynaconf settings.

Layers, lowest to highest: the package's built-in ``settings.toml``, the settings files
(``AI_TRADER_SETTINGS_FILES``, else ``settings.toml`` and ``.secrets.toml`` in the settings
directory: ``AI_TRADER_CONFIG_DIR``, else the working directory), ``config/config.<env>.yaml``
in that directory, then ``AI_TRADER_*`` environment variables.

dynaconf's own environment loader is switched off because it would put the guide's documented
names (``AI_TRADER_DATABASE_HOST``) into a flat ``DATABASE_HOST`` key and could not place the
YAML file below the environment variables; this module applies both itself. dynaconf's value
directives (``@json``, ``@int``, ``@format`` …) are switched off while loading (``auto_cast``)
and applied here afterwards, key by key: a secret is always taken verbatim, and a directive that
fails is a :class:`ConfigError` naming the key and where it was set, never the value.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any, get_type_hints

import yaml
from dynaconf import Dynaconf
from dynaconf.utils.parse_conf import Lazy, converters, parse_conf_data, parse_with_toml

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.sanitize import (
    MASK,
    is_secret_key,
    register_secrets,
    url_password,
    url_secret_parts,
)
from resilient.config._schema import ENV_PREFIX, ENVIRONMENTS, OPEN_BOOLEANS, SECTIONS

__all__ = [
    "DEFAULTS_FILE",
    "DIR_VAR",
    "ENV_PREFIX",
    "ENV_SWITCHER",
    "FILES_VAR",
    "Layers",
    "Source",
    "build_settings",
    "current_env",
    "load_layers",
    "set_process_options",
    "settings_dict",
]

ENV_SWITCHER = "AI_TRADER_ENV"
FILES_VAR = "AI_TRADER_SETTINGS_FILES"
DIR_VAR = "AI_TRADER_CONFIG_DIR"
CONTROL_VARS = frozenset({ENV_SWITCHER, FILES_VAR, DIR_VAR})  # choose files, set no key
DEFAULT_ENV = "development"
DEFAULTS_FILE = Path(__file__).with_name("settings.toml")
_INTERNAL = {"LOAD_DOTENV", "ENV", "ENVIRONMENTS_FOR_DYNACONF", "ENV_FOR_DYNACONF"}
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class _Options:
    env: str | None = None
    config_dir: Path | None = None
    settings_files: tuple[Path, ...] | None = None


_options = _Options()


def set_process_options(
    env: str | None = None,
    config_dir: str | os.PathLike[str] | None = None,
    settings_files: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...] | None = None,
) -> _Options:
    """Set where the process configuration is read from; returns the previous choice (for
    :func:`restore_process_options`)."""
    global _options
    previous = _options
    files = tuple(Path(p) for p in settings_files) if settings_files is not None else None
    _options = _Options(
        env=env.lower() if env else None,
        config_dir=Path(config_dir) if config_dir is not None else None,
        settings_files=files,
    )
    return previous


def restore_process_options(previous: _Options) -> None:
    """Undo :func:`set_process_options`."""
    global _options
    _options = previous


def current_env(environ: Mapping[str, str] | None = None) -> str:
    """The environment named by ``configure(env=...)`` or ``AI_TRADER_ENV`` (``development``
    when unset)."""
    if environ is None and _options.env:
        return _options.env
    environ = os.environ if environ is None else environ
    return (environ.get(ENV_SWITCHER) or DEFAULT_ENV).strip().lower()


@dataclass(frozen=True, slots=True)
class Source:
    """One layer of the configuration, as ``resilient config --sources`` lists it.

    ``kind`` is ``defaults``, ``file``, ``yaml``, ``variable`` or ``absent`` (an optional file
    looked for and not found, listed last); ``where`` the file path or the variable name;
    ``detail`` what a variable sets (secret values masked).
    """

    kind: str
    where: str
    detail: str = ""


@dataclass(slots=True)
class Layers:
    """Everything read for one load, before it is merged: files, YAML and variables."""

    env: str
    base: Path
    files: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    yaml_file: Path | None = None
    yaml_data: dict[str, Any] = field(default_factory=dict)
    # (dotted key, raw value, variable name), in precedence order
    variables: list[tuple[str, str, str]] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)  # reported at validation
    # control variables that were set (they choose files and set no key): (name, value)
    switches: list[tuple[str, str]] = field(default_factory=list)
    absent: list[Path] = field(default_factory=list)  # optional files looked for, not found

    def sources(self) -> list[Source]:
        """The layers in the order they were applied (secret values masked)."""
        out = [Source("variable", name, value) for name, value in self.switches]
        for path, _ in self.files:
            out.append(Source("defaults" if path == DEFAULTS_FILE else "file", str(path)))
        if self.yaml_file is not None:
            out.append(Source("yaml", str(self.yaml_file)))
        for key, raw, name in self.variables:
            shown = MASK if _is_secret(key, raw) else raw
            out.append(Source("variable", name, f"{key} = {shown}"))
        out.extend(Source("absent", str(path), "looked for, not found") for path in self.absent)
        return out

    def secret_values(self) -> list[str]:
        """Every secret written in a file or variable, with its URL fragments (unvalidated)."""
        found = [raw for key, raw, _ in self.variables if _is_secret(key, raw)]
        for _, table in self.env_tables():
            found += [
                str(v)
                for k, v in _walk(table)
                if v is not None and v != "" and not isinstance(v, bool) and _is_secret(k, v)
            ]
        return [part for value in found for part in (value, *url_secret_parts(value))]

    def env_tables(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(where, merged table of this environment) per file, then the YAML file."""
        for path, data in self.files:
            low = {str(k).lower(): v for k, v in data.items()}
            for part in ("default", self.env, "global"):
                table = low.get(part)
                if isinstance(table, Mapping):
                    yield str(path), table
        if self.yaml_file is not None:
            yield str(self.yaml_file), self.yaml_data

    def origin(self, dotted: str) -> str:
        """Where the value of ``dotted`` (or a key below it) was last set."""
        parts = dotted.split(".")
        for key, _, name in reversed(self.variables):
            kparts = key.split(".")
            if kparts[: len(parts)] == parts or parts[: len(kparts)] == kparts:
                return name
        for where, table in reversed(list(self.env_tables())):
            if _lookup(table, parts) is not _MISSING:
                return str(where)
        return "settings"


_MISSING = object()


def _lookup(table: Mapping[str, Any], parts: list[str]) -> Any:
    node: Any = table
    for part in parts:
        if not isinstance(node, Mapping):
            return _MISSING
        low = {str(k).lower(): v for k, v in node.items()}
        if part not in low:
            return _MISSING
        node = low[part]
    return node


def _problem(key: str, rule: str, fix: str, env: str) -> ConfigError:
    return ConfigError([ConfigProblem(key=key, rule=rule, fix=fix, env=env)], env=env)


def _set_by(where: str) -> str:
    return f"set by {where}" if where.startswith(ENV_PREFIX) else f"set in {where}"


def _is_secret(key: str, value: object) -> bool:
    """A secret by its name (password, api_key, token, dsn …), ``redis.url``, or any URL that
    carries a password: such values are never parsed, shown or reinterpreted."""
    leaf = key.rsplit(".", 1)[-1]
    if is_secret_key(leaf) or key == "redis.url":
        return True
    return isinstance(value, str) and "://" in value and url_password(value) is not None


def _schema_type(key: str) -> Any:
    section, _, leaf = key.partition(".")
    if leaf.rsplit(".", 1)[-1] in OPEN_BOOLEANS.get(section, ()):
        return bool
    cls = SECTIONS.get(section)
    if cls is None or "." in leaf:
        return None
    names = {f.name for f in fields(cls)}
    return get_type_hints(cls)[leaf] if leaf in names else None


def _section_keys() -> dict[str, set[str]]:
    return {name: {f.name for f in fields(cls)} for name, cls in SECTIONS.items()}


def _env_assignments(
    environ: Mapping[str, str], env: str
) -> tuple[list[tuple[str, str, str]], list[ConfigProblem]]:
    """``AI_TRADER_*`` variables as (dotted key, raw value, name), in precedence order."""
    known = _section_keys()
    nested: list[tuple[str, str, str]] = []
    flat: list[tuple[str, str, str]] = []
    problems: list[ConfigProblem] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in CONTROL_VARS:
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        raw = environ[name]
        if "__" in rest:  # dynaconf's nested form: AI_TRADER_SECTION__KEY[__SUB]
            key = ".".join(part for part in rest.split("__") if part)
            nested.append((key, raw, name))
            continue
        section = next((s for s in known if rest.startswith(s + "_")), None)
        if section is not None:  # the guide's form: AI_TRADER_DATABASE_HOST
            leaf = rest[len(section) + 1 :]
            if leaf in known[section]:
                flat.append((f"{section}.{leaf}", raw, name))
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
        flat.append((rest, raw, name))  # a top-level key such as AI_TRADER_LOG_LEVEL
    # The nested form is the more specific one, so it wins over the guide's flat names.
    return flat + nested, problems


def _directive_of(value: object) -> str | None:
    if isinstance(value, str) and value.startswith("@"):
        token = value.partition(" ")[0]
        if token in converters:
            return token
    return None


def _parse_variable(key: str, raw: str, name: str, env: str) -> Any:
    """The value of variable ``name`` for ``key``: verbatim for a secret, a strict boolean for a
    boolean setting, else TOML-typed or through its dynaconf directive."""
    if _is_secret(key, raw):
        return raw  # never reinterpret a secret: "0123" or "@json …" stays as written
    if _schema_type(key) is bool:
        word = raw.strip()
        if word.lower().startswith("@bool "):
            word = word[len("@bool ") :].strip()
        if word.lower() in _TRUE:
            return True
        if word.lower() in _FALSE:
            return False
        raise _problem(
            key,
            f"must be a boolean ({_set_by(name)})",
            "write true/false, 1/0, yes/no or on/off (any case)",
            env,
        )
    if _directive_of(raw) is not None:
        return _apply_directive(key, raw, name, env)
    try:
        return parse_with_toml(raw)
    except (ValueError, OverflowError, RecursionError):  # 5,000 digits: int() refuses
        raise _problem(
            key,
            f"could not be read as a value ({_set_by(name)})",
            "write a plain number (at most a few hundred digits), a boolean or a string",
            env,
        ) from None


_CAST_ON = {"AUTO_CAST_FOR_DYNACONF": True}


def _apply_directive(key: str, raw: str, where: str, env: str) -> Any:
    """``raw``'s dynaconf directive applied (lazy ones stay lazy and are checked later)."""
    token = _directive_of(raw) or ""
    try:
        return parse_conf_data(raw, tomlfy=True, box_settings=_CAST_ON)
    except Exception as exc:  # dynaconf's messages quote the value: keep only the type
        raise _problem(
            key,
            f"could not be read with {token} ({type(exc).__name__}; {_set_by(where)})",
            f"give {token} a value it accepts, or remove the directive",
            env,
        ) from None


def _read_toml(path: Path, env: str, what: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)" or "(at end of document)" and
        # never quotes the value
        message = str(exc)
        what_broke, _, where = message.partition(" (at ")
        where = where.removesuffix(")")
        if where == "end of document":
            lines = text.count("\n") + (0 if text.endswith("\n") else 1)
            where = f"line {max(lines, 1)} (end of file)"
        rule = f"is not valid TOML at {where}" if where else "is not valid TOML"
        raise _problem(str(path), f"{rule}: {what_broke}", "correct the TOML syntax", env) from None
    except (ValueError, RecursionError):
        raise _problem(
            str(path),
            "holds text TOML cannot read (not UTF-8, or a number of thousands of digits)",
            "save the file as UTF-8 and write numbers of at most a few hundred digits",
            env,
        ) from None
    except OSError as exc:
        raise _problem(
            str(path), f"cannot be read ({type(exc).__name__})", f"check {what}", env
        ) from None


def _load_yaml(path: Path, env: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _problem(
            str(path), f"is not valid YAML{where}", "correct the YAML syntax", env
        ) from None
    except (ValueError, RecursionError):  # a 5,000-digit number
        raise _problem(
            str(path), "holds a value YAML cannot read", "shorten the number", env
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _problem(
            str(path),
            "must hold a mapping of sections",
            "write sections such as 'resilience:' at the top",
            env,
        )
    return data


def _settings_paths(
    base: Path,
    environ: Mapping[str, str],
    settings_files: tuple[Path, ...] | None,
    env: str,
) -> list[Path]:
    if settings_files is None and environ.get(FILES_VAR, "").strip():
        names = [
            part.strip()
            for chunk in environ[FILES_VAR].split(os.pathsep)
            for part in chunk.split(",")
            if part.strip()
        ]
        settings_files = tuple(Path(n) for n in names)
        what = FILES_VAR
    else:
        what = "configure(settings_files=...)"
    if settings_files is not None:
        out = []
        for path in settings_files:
            full = path if path.is_absolute() else base / path
            if not full.is_file():
                raise _problem(
                    what,
                    f"names {full}, which is not a file",
                    "list existing TOML files, separated by ',' or the path separator",
                    env,
                )
            out.append(full)
        return out
    return [base / n for n in ("settings.toml", ".secrets.toml") if (base / n).is_file()]


def load_layers(
    env: str | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    settings_files: tuple[Path, ...] | None = None,
) -> Layers:
    """Read every layer for ``env``.

    Raises:
        ConfigError: an unknown environment, an unreadable or broken file (with its line).
    """
    process = environ is None and cwd is None and settings_files is None
    environ = os.environ if environ is None else environ
    env = (env or (current_env() if process else current_env(environ))).lower()
    if env not in ENVIRONMENTS:
        raise _problem(
            ENV_SWITCHER,
            f"unknown environment {env!r}",
            f"set AI_TRADER_ENV to one of {', '.join(ENVIRONMENTS)}",
            env,
        )
    if process:
        settings_files = _options.settings_files
    if cwd is not None:
        base = Path(cwd)
    elif process and _options.config_dir is not None:
        base = _options.config_dir
    elif environ.get(DIR_VAR, "").strip():
        base = Path(environ[DIR_VAR].strip())
        if not base.is_dir():
            raise _problem(DIR_VAR, f"names {base}, which is not a directory", "fix the path", env)
    else:
        base = Path.cwd()
    layers = Layers(env=env, base=base)
    layers.switches = [(n, environ[n]) for n in sorted(CONTROL_VARS) if environ.get(n)]
    layers.files.append((DEFAULTS_FILE, _read_toml(DEFAULTS_FILE, env, "the installation")))
    for path in _settings_paths(base, environ, settings_files, env):
        if path.resolve() != DEFAULTS_FILE.resolve():
            layers.files.append((path, _read_toml(path, env, "the file's permissions")))
    yaml_file = base / "config" / f"config.{env}.yaml"
    if yaml_file.is_file():
        layers.yaml_file = yaml_file
        layers.yaml_data = _load_yaml(yaml_file, env)
    optional = [yaml_file]
    if settings_files is None and not environ.get(FILES_VAR, "").strip():
        optional += [base / "settings.toml", base / ".secrets.toml"]
    layers.absent = [p for p in optional if not p.is_file()]
    layers.variables, layers.problems = _env_assignments(environ, env)
    register_secrets(layers.secret_values())  # masked even if loading fails further on
    return layers


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}.{str(k).lower()}" if prefix else str(k).lower())
    else:
        yield prefix, node


def build_from(layers: Layers) -> Dynaconf:
    """Merge ``layers`` into a dynaconf instance and apply the directives.

    Raises:
        ConfigError: a variable or directive that cannot be read (key and source named).
    """
    dyn = Dynaconf(
        environments=True,
        env=layers.env,
        settings_files=[str(p) for p, _ in layers.files],
        merge_enabled=True,
        load_dotenv=False,
        loaders=[],
        envvar_prefix=False,
        root_path=str(layers.base),
        auto_cast=False,  # directives are applied below, key by key
    )
    dyn.setenv(layers.env)
    if layers.yaml_file is not None:
        dyn.update(layers.yaml_data, merge=True)
    problems: list[ConfigProblem] = []
    lazy: list[tuple[str, str]] = []

    def apply(key: str, parse: Callable[[], Any], where: str) -> None:
        try:
            parsed = parse()
            dyn.set(key, parsed)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return
        except Exception as exc:  # a meta directive (@merge, @insert …) that cannot apply
            problems.append(
                ConfigProblem(
                    key=key,
                    rule=f"could not be applied ({type(exc).__name__}; {_set_by(where)})",
                    fix="remove the directive or give it a value it accepts",
                    env=layers.env,
                )
            )
            return
        if isinstance(parsed, Lazy):
            lazy.append((key, where))

    # Directives written in files: applied to the merged file values, secrets excepted.
    for key, value in list(_walk(settings_dict(dyn))):
        if _directive_of(value) is not None and not _is_secret(key, value):
            where = layers.origin(key)
            apply(key, partial(_apply_directive, key, value, where, layers.env), where)
    for key, raw, name in layers.variables:
        apply(key, partial(_parse_variable, key, raw, name, layers.env), name)
    # Lazy directives (@format, @jinja, @get, @read_file) are evaluated now, not at first use.
    for key, where in lazy:
        try:
            dyn.set(key, dyn.get(key))
        except Exception as exc:
            problems.append(
                ConfigProblem(
                    key=key,
                    rule=f"could not be evaluated ({type(exc).__name__}; {_set_by(where)})",
                    fix="make the directive refer to settings and files that exist",
                    env=layers.env,
                )
            )
    if problems:
        raise ConfigError(problems, env=layers.env)
    return dyn


def build_settings(
    env: str | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Dynaconf:
    """A fully layered dynaconf instance for ``env`` (from ``AI_TRADER_ENV`` when omitted)."""
    return build_from(load_layers(env, cwd=cwd, environ=environ))


def settings_dict(dyn: Dynaconf) -> dict[str, Any]:
    """The user-visible settings of ``dyn`` as plain lower-case nested data."""
    out: dict[str, Any] = {}
    for key, value in dyn.as_dict().items():
        if key in _INTERNAL or key.endswith("_FOR_DYNACONF"):
            continue
        out[key.lower()] = value
    return out
