"""The ``resilient`` command line: demo, health, config, breakers.

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int`` (the process exit code); its one-line help is in ``COMMANDS``. Only the
chosen command's module is imported, so ``resilient config`` does not pay for the database or
HTTP layers.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from resilient._core.exceptions import ConfigError
from resilient._core.sanitize import sanitize

__all__ = ["main"]

# name -> (module under resilient._cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo_cmd", "Run a simulated trading session with scripted faults (no servers)."),
    "health": (
        "health_cmd",
        "Run every health check once; exit 0 healthy, 1 degraded, 2 unhealthy.",
    ),
    "config": ("config_cmd", "Show or validate the effective configuration (secrets masked)."),
    "breakers": ("breakers_cmd", "List circuit breakers, or reset one by name."),
    "trading": ("trading_cmd", "Show the trading state, or set it: trading state NAME."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported to add its options."""
    parser = argparse.ArgumentParser(
        prog="resilient",
        description="Resilience layer for trading systems: demo, health, config, breakers.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(f"{__name__}.{module_name}")
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for usage or configuration errors)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(args_list)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        code: int = args._run(args)
    except ConfigError as exc:
        print(sanitize(exc), file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if 'pip install "resilient[' not in str(exc):
            raise
        print(f"resilient {args.command}: {sanitize(exc)}", file=sys.stderr)  # the extra to install
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
