"""Test helpers for users of resilient: fake clock, zero-wait retries, fault schedules, servers.

Importing this package is cheap and does not need hypothesis: the strategies
(``fault_schedules`` and friends) are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module as _import_module
from typing import TYPE_CHECKING, Any

from resilient._core.clock import FakeClock, use_clock
from resilient.testing._isolation import isolated_state, reset_state
from resilient.testing._policy import capture_events, zero_wait_retries
from resilient.testing.flaky import (
    FAULT_KINDS,
    Call,
    Fault,
    FaultSchedule,
    FlakyService,
    Hang,
    HTTPStatusError,
    Latency,
    OrderRejectedError,
    Outcome,
    RateLimited,
    Success,
    use_fake_clock,
)
from resilient.testing.invariants import (
    assert_fallback_iff_failed,
    assert_no_call_while_open,
    assert_no_duplicate_orders,
    assert_within_policy,
)

if TYPE_CHECKING:
    from resilient.testing.faults import FaultProxy
    from resilient.testing.servers import (
        PostgresServer,
        RedisClusterServer,
        RedisSentinelServer,
        RedisServer,
        free_port,
        postgres_server,
        redis_cluster,
        redis_sentinel,
        redis_server,
    )
    from resilient.testing.strategies import (
        fault_schedules,
        faults,
        outcomes,
        permanent_faults,
        transient_faults,
    )

# Names imported on first access: optional dependencies (hypothesis) and the fault tools.
_LAZY = {
    "FaultProxy": ".faults",
    "PostgresServer": ".servers",
    "RedisServer": ".servers",
    "RedisClusterServer": ".servers",
    "RedisSentinelServer": ".servers",
    "free_port": ".servers",
    "postgres_server": ".servers",
    "redis_cluster": ".servers",
    "redis_sentinel": ".servers",
    "redis_server": ".servers",
    "fault_schedules": ".strategies",
    "faults": ".strategies",
    "outcomes": ".strategies",
    "permanent_faults": ".strategies",
    "transient_faults": ".strategies",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
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
]
