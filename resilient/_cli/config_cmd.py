"""``resilient config``: show, validate or trace the effective configuration (secrets masked)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from typing import Any

from resilient._core.exceptions import ConfigError, ConfigProblem
from resilient._core.sanitize import MASK, sanitize, sanitize_obj
from resilient.config import ConfigManager
from resilient.config._schema import SECTIONS, Config
from resilient.health._alerts import DEFAULT_RULES, rules_from_config
from resilient.integration import ResilienceFactory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``resilient config``."""
    parser.add_argument("--env", help="environment to load (default: AI_TRADER_ENV or development)")
    parser.add_argument(
        "--validate",
        action="store_true",
        help="validate everything the factory checks (services and alerts included); "
        "exit 0 when valid, 2 when not",
    )
    parser.add_argument(
        "--sources",
        action="store_true",
        help="list every file and variable read, in the order applied (secrets masked)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def masked_dict(config: Config) -> dict[str, Any]:
    """The configuration as plain data with every secret masked."""
    data: dict[str, Any] = {"env": config.env, "log_level": config.log_level}
    for name in SECTIONS:
        section = asdict(getattr(config, name))
        cls = SECTIONS[name]
        for f in fields(cls):
            if f.metadata.get("secret") and section.get(f.name):
                section[f.name] = MASK
        data[name] = section
    for name, value in config.extra.items():
        data[name] = value
    masked: dict[str, Any] = sanitize_obj(data)
    return masked


def validate_features(config: Config) -> None:
    """Check the sections the factory and the health monitor read (``services``, ``alerts``)
    as they do at start-up.

    Raises:
        ConfigError: listing every problem of those sections.
    """
    problems: list[ConfigProblem] = []
    try:
        ResilienceFactory(config, logging=False, database=False)
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        rules_from_config(config.section("alerts") or DEFAULT_RULES, env=config.env)
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, env=config.env)


def print_sources(manager: ConfigManager, as_json: bool) -> None:
    """Print the layers of ``manager``'s configuration, lowest first."""
    sources = manager.sources()
    if as_json:
        rows = [{"kind": s.kind, "where": s.where, "sets": s.detail} for s in sources]
        print(sanitize(json.dumps(sanitize_obj(rows), indent=2)))
        return
    print(f"configuration sources for environment {manager.env!r}, lowest first:")
    for i, source in enumerate(sources, 1):
        detail = f"    {source.detail}" if source.detail else ""
        print(sanitize(f"  {i:2d}. {source.kind:<9} {source.where}{detail}"))


def run(args: argparse.Namespace) -> int:
    """Load (and validate) the configuration; print it unless ``--validate``."""
    manager = ConfigManager(args.env) if args.env else ConfigManager()
    if args.sources:  # listed before validation: they help find what is wrong
        print_sources(manager, args.json)
        return 0
    config = manager.load_config()  # raises ConfigError -> exit 2 in main()
    if args.validate:
        validate_features(config)
        if args.json:
            print(json.dumps({"env": config.env, "valid": True}))
        else:
            print(f"configuration for environment {config.env!r} is valid")
        return 0
    data = masked_dict(config)
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
        return 0
    print(f"environment: {config.env}")
    print(f"log_level = {data['log_level']}    (AI_TRADER_LOG_LEVEL)")
    for section in SECTIONS:
        print(f"\n[{section}]")
        for key, value in data[section].items():
            env_var = f"AI_TRADER_{section.upper()}__{key.upper()}"
            shown = "(unset)" if value is None else json.dumps(value)
            print(sanitize(f"  {key} = {shown}    ({env_var})"))
    for name in config.extra:
        print(f"\n[{name}]")
        print(sanitize(json.dumps(data[name], indent=2, default=str)))
    return 0
