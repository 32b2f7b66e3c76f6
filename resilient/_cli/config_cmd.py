"""``resilient config``: show or validate the effective configuration (secrets masked)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from typing import Any

from resilient._sanitize import MASK, sanitize, sanitize_obj
from resilient.config import ConfigManager
from resilient.config._schema import SECTIONS, Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``resilient config``."""
    parser.add_argument("--env", help="environment to load (default: AI_TRADER_ENV or development)")
    parser.add_argument(
        "--validate", action="store_true", help="only validate; exit 0 when valid, 2 when not"
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


def run(args: argparse.Namespace) -> int:
    """Load (and validate) the configuration; print it unless ``--validate``."""
    manager = ConfigManager(args.env) if args.env else ConfigManager()
    config = manager.load_config()  # raises ConfigError -> exit 2 in main()
    if args.validate:
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
