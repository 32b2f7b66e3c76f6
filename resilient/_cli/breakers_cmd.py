"""``resilient breakers [reset NAME]``: list circuit states, or reset one cluster-wide.

States come from Redis (``redis.url``: breakers shared by every process) and from this
process's breaker registry. A reset writes ``closed`` to Redis with a version above every
writer's, so every process applies it within milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from typing import Any

from resilient._backends.redis import RedisUnavailable, close_workers
from resilient._backends.shared_state import RedisSharedState
from resilient._core.sanitize import mask_url, sanitize, sanitize_obj
from resilient._policies.breaker import breakers
from resilient.config import current_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``resilient breakers``."""
    parser.add_argument("action", nargs="?", choices=["reset"], help="reset NAME")
    parser.add_argument("name", nargs="?", help="breaker to reset")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _iso(epoch: Any) -> str:
    try:
        value = float(epoch)
    except (TypeError, ValueError):
        return ""
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")


def _local() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for snap in breakers.snapshots():
        found[snap.name] = {
            "state": snap.state,
            "failure_count": snap.failure_count,
            "total_calls": snap.total_calls,
            "opened_at": _iso(snap.opened_at) if snap.opened_at else "",
            "shared": snap.shared,
            "source": "process",
        }
    return found


def _shared_state(url: str) -> Any:
    redis = current_config().redis
    return RedisSharedState(
        url, timeout=max(redis.timeout, 0.5), prefix=redis.key_prefix, origin=f"cli-{os.getpid()}"
    )


async def _remote(url: str) -> dict[str, dict[str, Any]]:
    state = _shared_state(url)
    records = await state.records()
    return {
        name: {
            "state": data.get("state", "?"),
            "version": data.get("version", ""),
            "opened_at": _iso(data.get("opened_at")) if data.get("opened_at") else "",
            "forced": data.get("forced") == "1",
            "permits_in_use": int(data.get("permits_in_use", "0") or 0),
            "source": "redis",
        }
        for name, data in sorted(records.items())
    }


def _print_table(rows: dict[str, dict[str, Any]], *, redis_read: bool) -> None:
    if not rows:
        where = (
            "none in this process, none stored in Redis" if redis_read else ("none in this process")
        )
        print(f"no circuit breakers known ({where})")
        return
    width = max(12, *(len(n) for n in rows))
    print(f"{'NAME':<{width}}  {'STATE':<9}  {'SOURCE':<7}  {'OPENED AT':<25}  DETAIL")
    for name, row in rows.items():
        detail = []
        if row.get("permits_in_use"):
            detail.append(f"trial permits in use: {row['permits_in_use']}")
        if row.get("forced"):
            detail.append("forced open")
        if "total_calls" in row:
            detail.append(f"calls {row['total_calls']}, failures {row['failure_count']}")
        print(
            sanitize(
                f"{name:<{width}}  {row['state']:<9}  {row['source']:<7}  "
                f"{row.get('opened_at', ''):<25}  {'; '.join(detail)}"
            )
        )


def _run_async(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    finally:
        close_workers()


def run(args: argparse.Namespace) -> int:
    """List breakers, or reset ``args.name``; exit 1 when Redis is unreachable or the name is
    unknown, 2 for usage or configuration errors."""
    config = current_config()
    url = config.redis.url
    if args.action is None and args.name is not None:
        print("usage: resilient breakers [reset NAME] [--json]", file=sys.stderr)
        return 2
    if args.action == "reset":
        if not args.name:
            print("resilient breakers reset: NAME is required", file=sys.stderr)
            return 2
        return _reset(args, url)

    rows = _local()
    code = 0
    if url:
        try:
            remote = _run_async(_remote(url))
        except RedisUnavailable as exc:
            print(
                sanitize(
                    f"Redis unreachable at {mask_url(url)} ({exc}); showing this process only"
                ),
                file=sys.stderr,
            )
            code = 1
        else:
            for name, row in remote.items():
                local = rows.get(name)
                rows[name] = {
                    **row,
                    **(
                        {
                            "total_calls": local["total_calls"],
                            "failure_count": local["failure_count"],
                        }
                        if local
                        else {}
                    ),
                }
    if args.json:
        print(json.dumps(sanitize_obj(rows), indent=2, sort_keys=True))
    else:
        _print_table(rows, redis_read=bool(url) and code == 0)
    return code


def _reset(args: argparse.Namespace, url: str | None) -> int:
    name: str = args.name
    local_names = set(breakers.names())
    if not url:
        if name in local_names:
            breakers.reset(name)
            print(sanitize(f"circuit {name!r} reset in this process"))
            return 0
        print(
            "resilient breakers reset: no redis.url is configured, so there is no shared "
            "circuit state to reset.\nFix: set redis.url (AI_TRADER_REDIS__URL) to the Redis "
            "that holds the breakers' state.",
            file=sys.stderr,
        )
        return 2

    async def reset() -> tuple[bool, int]:
        state = _shared_state(url)
        known = name in await state.records()
        version = await state.reset(name) if known or name in local_names else 0
        return known, version

    try:
        known, version = _run_async(reset())
    except RedisUnavailable as exc:
        print(
            sanitize(f"Redis unreachable at {mask_url(url)} ({exc}); nothing was reset"),
            file=sys.stderr,
        )
        return 1
    if name in local_names:
        breakers.reset(name)
    if not known and name not in local_names:
        print(
            sanitize(f"unknown breaker {name!r}; run `resilient breakers` to list them"),
            file=sys.stderr,
        )
        return 1
    message = {"name": name, "state": "closed", "version": version, "scope": "cluster"}
    if args.json:
        print(json.dumps(sanitize_obj(message)))
    else:
        print(sanitize(f"circuit {name!r} reset to closed cluster-wide (version {version})"))
    return 0
