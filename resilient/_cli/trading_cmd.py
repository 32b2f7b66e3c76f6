"""``resilient trading state [NAME]``: show the trading state, or set it for every worker.

The state is shared through Redis when ``redis.url`` is set: every factory polls one key and
applies a change within its poll interval (0.5 s). Without Redis the running workers' state is
``trading.state`` in their settings (hot reload) or ``factory.set_trading_state(...)``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from resilient._core.sanitize import sanitize
from resilient.config import current_config
from resilient.trading._state import decode, encode, redis_client, state_key

STATES = ("active", "reducing", "halted")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``resilient trading``."""
    parser.add_argument("action", choices=["state"], help="state: show or set the trading state")
    parser.add_argument(
        "name",
        nargs="?",
        choices=STATES,
        help="active | reducing (only orders that reduce a position) | halted (only cancels)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    """Show or set the trading state; 0 on success, 1 when Redis is unreachable, 2 when the
    state cannot be shared (no ``redis.url``)."""
    config = current_config()
    url = config.redis.url
    shown: dict[str, Any] = {"state": config.trading.state, "source": "settings (trading.state)"}
    if url is None:
        if args.name is not None:
            print(
                "cannot set the trading state of running workers: redis.url is not set, so the "
                "state is not shared. Set trading.state (AI_TRADER_TRADING__STATE="
                f"{args.name}) and reload, or call factory.set_trading_state({args.name!r}) "
                "in the process",
                file=sys.stderr,
            )
            return 2
        _print(shown, args.json)
        return 0
    key = state_key(config.redis.key_prefix)
    try:
        client = redis_client(url, max(config.redis.timeout, 1.0))
        if args.name is not None:
            client.set(key, encode(args.name, "cli"))
        raw = client.get(key)
        client.close()
    except Exception as exc:
        print(sanitize(f"Redis unreachable: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1
    data = decode(raw)
    if data is not None:
        shown = {"state": data["state"], "source": f"redis ({data.get('source', '?')})"}
        shown["set_at"] = data.get("at")
    _print(shown, args.json)
    return 0


def _print(shown: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(shown))
    else:
        print(f"trading state: {shown['state']} (from {shown['source']})")
