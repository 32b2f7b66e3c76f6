"""The ``resilient`` command line: demo, health, config, breakers.

Each sub-command lives in its own module exposing ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int`` (the process exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .._exceptions import ConfigError
from .._sanitize import sanitize

__all__ = ["main"]

# name -> module under resilient._cli
COMMANDS: dict[str, str] = {
    "demo": "demo_cmd",
    "health": "health_cmd",
    "config": "config_cmd",
    "breakers": "breakers_cmd",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="resilient",
        description="Resilience layer for trading systems: demo, health, config, breakers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"{__name__}.{module_name}")
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for usage or configuration errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        code: int = args._run(args)
    except ConfigError as exc:
        print(sanitize(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
