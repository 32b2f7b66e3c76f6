"""``resilient health``: run every health check once and report (exit 0/1/2)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from resilient._backends import redis as _redis
from resilient._core.extras import missing_extra
from resilient._core.sanitize import sanitize, sanitize_obj
from resilient.config import current_config
from resilient.health import CheckResult, HealthOrchestrator, HealthStatus, registry

if TYPE_CHECKING:
    from resilient.health import CheckResult, HealthRegistry

_db: ModuleType | None
_db_missing: BaseException | None = None
try:
    from resilient import db as _db
except ImportError as exc:  # a broken install: the report says so rather than a traceback
    _db = None
    _db_missing = (
        missing_extra(exc, "the database") if isinstance(exc, ModuleNotFoundError) else exc
    )

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``resilient health``."""
    parser.add_argument("--json", action="store_true", help="print the system health as JSON")


class _Component:
    """A fixed check result registered for one run, unregistered by ``close()``."""

    def __init__(
        self, registry: HealthRegistry, name: str, result: CheckResult, *, critical: bool = True
    ) -> None:
        self._registry = registry
        self._name = name
        registry.register(name, lambda: result, critical=critical)

    async def close(self) -> None:
        self._registry.unregister(self._name)


def _failure_detail(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {sanitize(exc)}"


def _sqlite_file_result() -> CheckResult | None:
    """The database's result when it is an embedded SQLite file that does not exist yet
    (opening it would create it: a health probe must not leave one behind); ``None`` when
    the database should be probed normally."""
    db = current_config().database
    if not db.is_sqlite or db.sqlite_path == ":memory:":
        return None
    path = Path(db.sqlite_path)
    if path.exists():
        return None
    parent = path.parent
    if parent.is_dir() and os.access(parent, os.W_OK):
        return CheckResult(
            HealthStatus.HEALTHY,
            f"embedded SQLite file {path} not created yet (created on first use)",
        )
    return CheckResult(
        HealthStatus.UNHEALTHY,
        f"embedded SQLite file {path} does not exist and {parent} is not a writable "
        "directory: set database.sqlite_path or database.host",
    )


async def _attach_data_layer(stack: list[Any]) -> None:
    """Register the database and cache components the data layer provides (when installed).

    The database and any stand-in for a failed start go on ``stack``; their ``close()``
    unregisters them again.
    """
    if _db is None:
        result = CheckResult(HealthStatus.UNHEALTHY, _failure_detail(_db_missing or ImportError()))
        stack.append(_Component(registry, "database", result))
    else:
        sqlite_result = _sqlite_file_result()
        try:
            if sqlite_result is not None:
                stack.append(_Component(registry, "database", sqlite_result))
            else:
                db = _db.get_database()
                await db.start(register_health=True)
                stack.append(db)
        except Exception as exc:  # a missing driver (the `db` extra): reported, not raised
            result = CheckResult(HealthStatus.UNHEALTHY, _failure_detail(exc))
            stack.append(_Component(registry, "database", result))
    try:
        _redis.register_health_checks(registry)
    except Exception as exc:
        result = CheckResult(HealthStatus.DEGRADED, _failure_detail(exc))
        stack.append(_Component(registry, "cache", result, critical=False))


async def collect() -> dict[str, Any]:
    """Run one health cycle with the data layer attached and return the system health."""
    stack: list[Any] = []
    try:
        await _attach_data_layer(stack)
        orchestrator = HealthOrchestrator()
        return await orchestrator.get_system_health()
    finally:
        for resource in reversed(stack):
            # closing a failed resource must not hide the report
            with contextlib.suppress(Exception):
                await resource.close()


def _table(health: dict[str, Any]) -> str:
    rows = [("COMPONENT", "STATUS", "CRITICAL", "LATENCY", "DETAIL")]
    for name, comp in sorted(health["components"].items()):
        rows.append(
            (
                name,
                comp["status"],
                "yes" if comp.get("critical") else "no",
                f"{comp.get('latency_ms', 0.0):.1f} ms",
                comp.get("detail", "") or "",
            )
        )
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = [
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in rows
    ]
    if len(rows) == 1:
        lines.append("(no components registered)")
    errors = health["error_handling"]
    lines.append("")
    lines.append(f"overall: {health['overall_status']}    at {health['timestamp']}")
    lines.append(
        f"errors: {errors['total_errors']} total, rate {errors['error_rate']:.3f} "
        f"over {errors['window_seconds']:g}s"
    )
    for alert in health.get("alerts", []):
        lines.append(f"ALERT [{alert['severity']}] {alert['message']}")
    return sanitize("\n".join(line.rstrip() for line in lines))


def run(args: argparse.Namespace) -> int:
    """Run the checks once; print; return 0 healthy, 1 degraded, 2 unhealthy."""
    health = asyncio.run(collect())
    if args.json:
        print(json.dumps(sanitize_obj(health), indent=2, sort_keys=True, default=str))
    else:
        print(_table(health))
    return EXIT_CODES.get(str(health["overall_status"]), 2)
