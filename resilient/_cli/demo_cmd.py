"""``resilient demo``: a simulated trading session through a scripted outage (no servers)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from resilient._demo import render_health, run_demo

HELP = (
    "Run a simulated broker and market-data feed through a seeded fault script (a 429 with "
    "Retry-After, slow answers, an outage, a lost order answer, recovery) on the embedded "
    "defaults; shows retries, breakers opening and closing, cached fallbacks, alerts and the "
    "final health. Exit 0 when every behaviour was seen, 1 otherwise."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options."""
    parser.epilog = HELP
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document (events, counts, final health) instead of the narrative",
    )
    parser.add_argument(
        "--seed", type=int, default=7, help="seed of the simulated prices (default 7)"
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress line on stderr (it is only drawn on a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """Run the demo; 0 when every behaviour it demonstrates was observed."""
    progress = not args.no_progress and sys.stderr.isatty()
    if not args.json:
        print("resilient demo: a simulated trading session through a scripted outage")
    result = asyncio.run(
        run_demo(
            seed=args.seed, out=sys.stdout, err=sys.stderr, narrate=not args.json, progress=progress
        )
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
        return 0 if result.ok else 1

    def write(line: str) -> None:
        print(line)

    print()
    render_health(result.health, write)
    c = result.counts
    print(
        f"\n{c['price_reads']} price reads, {c['retries']} retries, "
        f"{c['fallbacks_served']} cached fallbacks served, {c['breaker_transitions']} breaker "
        f"transitions, {c['alerts_fired']} alerts fired / {c['alerts_resolved']} resolved, "
        f"{c['orders_placed']} orders placed, {c['orders_refused']} refused by risk limits "
        f"— {result.duration:.1f}s"
    )
    missing = [name for name, seen in result.checks.items() if not seen]
    if missing:
        print(f"not observed: {', '.join(missing)}", file=sys.stderr)
        return 1
    print("every behaviour observed: " + ", ".join(result.checks))
    return 0
