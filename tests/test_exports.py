"""The public surface is explicit and pinned: a change to it is a deliberate decision."""

from __future__ import annotations

import importlib

import pytest

EXPORTS: dict[str, list[str]] = {
    "resilient": [
        "Breaker",
        "BreakerSnapshot",
        "Bulkhead",
        "BulkheadFullError",
        "BulkheadSnapshot",
        "CachedValue",
        "CircuitOpenError",
        "ConfigError",
        "ErrorCategory",
        "EventKind",
        "FakeClock",
        "FallbackCache",
        "FallbackStatus",
        "HedgeStats",
        "PolicyEvent",
        "PolicyHook",
        "ResilientError",
        "RiskLimitError",
        "TimeoutError",
        "TradingDisabledError",
        "__version__",
        "add_hook",
        "breaker",
        "breakers",
        "bulkhead",
        "bulkheads",
        "classify",
        "correlation_id",
        "deadline",
        "disable_logging",
        "enable_logging",
        "fallback",
        "fallback_status",
        "get_breaker",
        "get_bulkhead",
        "get_clock",
        "get_fallback_cache",
        "hedge",
        "hedge_stats",
        "record_error",
        "register_cache_type",
        "remove_hook",
        "resilient",
        "retry",
        "sanitize",
        "set_clock",
        "set_fallback_cache",
        "timeout",
        "use_clock",
    ],
    "resilient.errors": [
        "BulkheadFullError",
        "CircuitOpenError",
        "ConfigError",
        "ErrorCategory",
        "ErrorRecord",
        "ErrorTracker",
        "ResilientError",
        "RiskLimitError",
        "TimeoutError",
        "TradingDisabledError",
        "classify",
        "correlation_id",
        "current_correlation_id",
        "install_hooks",
        "is_transient",
        "proves_not_sent",
        "record_error",
        "register_classifier",
        "retry_after",
        "tracker",
    ],
    "resilient.health": [
        "AlertEvent",
        "AlertManager",
        "AlertRule",
        "CheckResult",
        "ComponentHealth",
        "ComponentStats",
        "HealthOrchestrator",
        "HealthRegistry",
        "HealthReport",
        "HealthStatus",
        "registry",
        "stats",
    ],
    "resilient.config": [
        "DEFAULTS_FILE",
        "ENVIRONMENTS",
        "ENV_PREFIX",
        "Config",
        "ConfigError",
        "ConfigManager",
        "ConfigProblem",
        "DatabaseSettings",
        "FeatureSettings",
        "RedisSettings",
        "ResilienceSettings",
        "Source",
        "TradingSettings",
        "build_settings",
        "configure",
        "current_config",
        "current_env",
        "reload_config",
        "settings",
        "subscribe",
        "switches",
    ],
    "resilient.integration": [
        "ResilienceFactory",
    ],
    "resilient.streams": [
        "Gap",
        "MarketCalendar",
        "StreamSettings",
        "StreamSupervisor",
        "stream_settings",
        "websocket",
    ],
    "resilient.otel": [
        "Telemetry",
        "attempts",
        "install",
        "installed",
        "instrument",
        "traced",
        "uninstall",
    ],
    "resilient.testing": [
        "FAULT_KINDS",
        "Call",
        "FakeClock",
        "Fault",
        "FaultProxy",
        "FaultSchedule",
        "FlakyService",
        "HTTPStatusError",
        "Hang",
        "Latency",
        "OrderRejectedError",
        "Outcome",
        "PostgresServer",
        "RateLimited",
        "RedisClusterServer",
        "RedisSentinelServer",
        "RedisServer",
        "Success",
        "assert_fallback_iff_failed",
        "assert_no_call_while_open",
        "assert_no_duplicate_orders",
        "assert_within_policy",
        "capture_events",
        "fault_schedules",
        "faults",
        "free_port",
        "isolated_state",
        "outcomes",
        "permanent_faults",
        "postgres_server",
        "redis_cluster",
        "redis_sentinel",
        "redis_server",
        "reset_state",
        "transient_faults",
        "use_clock",
        "use_fake_clock",
        "zero_wait_retries",
    ],
}


@pytest.mark.parametrize("module_name", sorted(EXPORTS))
def test_all_is_pinned_sorted_and_importable(module_name: str) -> None:
    """Each public module's __all__ is exactly the pinned list and every name exists
    (ruff's RUF022 keeps the lists sorted)."""
    module = importlib.import_module(module_name)
    assert list(module.__all__) == EXPORTS[module_name]
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_design_contract_names() -> None:
    """The names DESIGN.md promises are importable from where it says."""
    import resilient as package
    from resilient import breaker, fallback, resilient, retry, timeout  # noqa: F401
    from resilient.config import ConfigError, ConfigManager, settings  # noqa: F401
    from resilient.errors import ErrorCategory, classify, correlation_id  # noqa: F401
    from resilient.health import HealthRegistry, registry  # noqa: F401
    from resilient.integration import ResilienceFactory  # noqa: F401

    assert issubclass(package.TimeoutError, TimeoutError)
    assert issubclass(package.TimeoutError, package.ResilientError)
