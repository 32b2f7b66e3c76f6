"""Latency of ``get_system_health()``: ``python -m resilient.health._bench [components] [rounds]``.

Half the components are async health checks, half are circuit breakers that have seen a call;
prints p50/p95/max in milliseconds. The deployment guide's budget is p95 < 100 ms.
"""

from __future__ import annotations

import asyncio
import sys
import time

from resilient._instrument.stats import p95
from resilient._policies.breaker import breaker, breakers
from resilient.health._model import CheckResult, HealthStatus
from resilient.health._orchestrator import HealthOrchestrator
from resilient.health._registry import HealthRegistry
from resilient.health._sources import policy_components

__all__ = ["bench_system_health"]


async def bench_system_health(components: int = 50, rounds: int = 200) -> dict[str, float]:
    """Measure ``get_system_health()`` over ``rounds`` runs with ``components`` components.

    Uses a private registry and breaker names prefixed ``bench-``; returns p50/p95/max in ms.
    """
    registry = HealthRegistry()
    registry.add_provider(policy_components)
    checks = components // 2
    names = [f"bench-{i}" for i in range(components - checks)]
    for i in range(checks):

        async def check(i: int = i) -> CheckResult:
            await asyncio.sleep(0)
            return CheckResult(HealthStatus.HEALTHY, "", {"n": i})

        registry.register(f"check-{i}", check)
    for name in names:

        @breaker(name)
        async def call() -> int:
            return 1

        await call()
    orchestrator = HealthOrchestrator(registry)
    try:
        durations: list[float] = []
        for _ in range(rounds):
            started = time.perf_counter()
            await orchestrator.get_system_health()
            durations.append(time.perf_counter() - started)
    finally:
        for name in names:
            breakers.remove(name)
    durations.sort()
    return {
        "components": float(components),
        "rounds": float(rounds),
        "p50_ms": durations[len(durations) // 2] * 1000.0,
        "p95_ms": (p95(durations) or 0.0) * 1000.0,
        "max_ms": durations[-1] * 1000.0,
    }


def main(argv: list[str]) -> int:
    components = int(argv[0]) if argv else 50
    rounds = int(argv[1]) if len(argv) > 1 else 200
    result = asyncio.run(bench_system_health(components, rounds))
    sys.stdout.write(
        f"get_system_health with {components} components, {rounds} rounds: "
        f"p50 {result['p50_ms']:.2f} ms, p95 {result['p95_ms']:.2f} ms, "
        f"max {result['max_ms']:.2f} ms\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
