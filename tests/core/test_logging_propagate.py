"""``enable_logging(propagate=True)``: the package's records reach the application's own
loguru handlers, marked, with their origin and an exception as text (never a traceback)."""

from __future__ import annotations

from typing import Any

from loguru import logger

from resilient import disable_logging, enable_logging
from resilient.health import AlertManager, AlertRule, HealthRegistry


def test_records_reach_the_application_handlers_with_the_exception_as_text() -> None:
    records: list[dict[str, Any]] = []
    handler = logger.add(lambda m: records.append(m.record), level="DEBUG", format="{message}")
    enable_logging("WARNING", propagate=True)
    try:
        manager = AlertManager(
            [AlertRule.parse("hot", {"condition": "error_rate > 0.1", "severity": "critical"})]
        )
        manager.evaluate({"error_rate": {"system": 0.5}})

        registry = HealthRegistry()

        def provider() -> dict[str, Any]:
            raise RuntimeError("provider exploded")

        registry.add_provider(provider)
        registry.check_all_sync()
    finally:
        disable_logging()
        logger.remove(handler)
    ours = [r for r in records if r["extra"].get("resilient")]
    alert = next(r for r in ours if r["message"].startswith("alert hot firing"))
    assert alert["level"].name == "CRITICAL"
    assert alert["extra"]["alert"] == "hot"
    assert alert["name"].startswith("resilient.")  # the origin is kept, not this module
    failed = next(r for r in ours if "a health provider failed" in r["message"])
    assert failed["level"].name == "WARNING"
    assert failed["message"].endswith("| RuntimeError: provider exploded")
    assert failed["exception"] is None  # no traceback handed to the application's handlers


def test_below_the_level_nothing_is_handed_on() -> None:
    records: list[dict[str, Any]] = []
    handler = logger.add(lambda m: records.append(m.record), level="DEBUG", format="{message}")
    enable_logging("CRITICAL", propagate=True)
    try:
        AlertManager(
            [AlertRule.parse("warm", {"condition": "error_rate > 0.1", "severity": "warning"})]
        ).evaluate({"error_rate": {"system": 0.5}})
    finally:
        disable_logging()
        logger.remove(handler)
    assert [r for r in records if r["extra"].get("resilient")] == []
