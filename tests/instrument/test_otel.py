"""OpenTelemetry: metrics and spans from the policy events, checked with the SDK's in-memory
exporter and reader."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

import resilient
from resilient import otel

SECRET = "sk-live-5ecr3t-TOKEN"


class Sinks:
    def __init__(self, durations: bool = False) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = otel.install(
            MeterProvider(metric_readers=[self.reader]), tracer_provider, durations=durations
        )

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        for p in m.data.data_points:
                            value = getattr(p, "value", None)
                            found.append((dict(p.attributes), value if value is not None else p))
        return found

    def everything(self) -> str:
        """Every attribute, event and name written, as text (to look for secrets)."""
        text = [repr(self.reader.get_metrics_data())]
        for span in self.spans.get_finished_spans():
            text.append(span.to_json())
        return "\n".join(text)


@pytest.fixture
def sinks() -> Iterator[Sinks]:
    made = Sinks()
    try:
        yield made
    finally:
        otel.uninstall()


def test_import_resilient_does_not_import_opentelemetry() -> None:
    """``import resilient`` loads no OpenTelemetry module of its own (redis-py, imported by
    pybreaker, may load one by itself: loaded first here, it is not counted)."""
    code = textwrap.dedent(
        """
        import sys
        import redis  # noqa: F401 - whatever redis-py loads on its own
        before = {m for m in sys.modules if m.startswith("opentelemetry")}
        import resilient
        import resilient.trading, resilient.integration, resilient.metrics, resilient.health
        after = {m for m in sys.modules if m.startswith("opentelemetry")}
        print(sorted(after - before), "resilient.otel" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[] False"


def test_without_opentelemetry_the_package_works_and_otel_says_what_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}")
        sys.meta_path.insert(0, Block())
        import resilient
        assert resilient.retry
        try:
            import resilient.otel
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert 'pip install "resilient[otel]"' in out


async def test_events_counter_has_polly_attributes_and_no_secret(sinks: Sinks) -> None:
    calls = 0

    @otel.traced("pricing", operation="get_price")
    @resilient.fallback(value=-1.0, name="pricing")
    @resilient.retry(max_attempts=3, initial_delay=0, max_delay=0, name="pricing")
    @resilient.breaker("pricing", failure_threshold=2)
    async def get_price(symbol: str, api_key: str) -> float:
        nonlocal calls
        calls += 1
        raise ConnectionError(f"refused for {api_key}")

    assert await get_price("AAPL", SECRET) == -1.0
    points = sinks.points("resilient.strategy.events")
    names = {(p["event.name"], p["strategy"]) for p, _ in points}
    assert ("retry", "retry") in names
    assert ("circuit_open", "circuit_breaker") in names
    assert ("fallback_served", "fallback") in names
    retry_point = next(p for p, _ in points if p["event.name"] == "retry")
    assert retry_point == {
        "event.name": "retry",
        "service": "pricing",
        "strategy": "retry",
        "operation": "get_price",
        "error.type": "ConnectionError",
    }
    assert SECRET not in sinks.everything()
    assert "AAPL" not in sinks.everything()  # no call argument either


def test_breaker_state_gauge_and_retry_counter(sinks: Sinks) -> None:
    @resilient.retry(max_attempts=2, initial_delay=0, max_delay=0, name="gauge")
    @resilient.breaker("gauge", failure_threshold=1)
    def read() -> None:
        raise TimeoutError("slow")

    with pytest.raises((TimeoutError, resilient.CircuitOpenError)):
        read()
    states = {p["state"]: v for p, v in sinks.points("resilient.circuit_breaker.state")}
    assert states == {"closed": 0, "open": 1, "half-open": 0}
    retries = sinks.points("resilient.retries")
    assert any(p["service"] == "gauge" and p["retry.attempt"] == 1 and v >= 1 for p, v in retries)


async def test_spans_one_per_call_a_child_per_attempt_with_resend_count(sinks: Sinks) -> None:
    failures = 2

    @otel.instrument("quotes", max_attempts=3, initial_delay=0, max_delay=0, budget=False)
    async def get_quote(symbol: str) -> float:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionResetError(f"reset ({SECRET})")
        return 101.5

    assert await get_quote("AAPL") == 101.5
    spans = sinks.spans.get_finished_spans()
    [call] = [s for s in spans if s.name == "get_quote"]
    tries = sorted(
        (s for s in spans if s.name == "get_quote attempt"), key=lambda s: s.start_time or 0
    )
    assert len(tries) == 3
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in tries)
    assert [s.attributes.get("http.request.resend_count") for s in tries] == [None, 1, 2]
    assert [s.status.status_code.name for s in tries] == ["ERROR", "ERROR", "UNSET"]
    assert tries[0].attributes["error.type"] == "ConnectionResetError"
    retry_events = [e for e in call.events if e.name == "retry"]
    assert [e.attributes["retry.attempt"] for e in retry_events] == [1, 2]
    assert call.attributes["service"] == "quotes"
    assert SECRET not in sinks.everything()


async def test_fallback_event_carries_source_and_age(sinks: Sinks) -> None:
    down = False

    @otel.traced("bars", operation="get_bars")
    @resilient.fallback(cache=True, name="bars")
    async def get_bars(symbol: str) -> list[int]:
        if down:
            raise ConnectionError("down")
        return [1, 2, 3]

    await get_bars("AAPL")
    down = True
    assert await get_bars("AAPL") == [1, 2, 3]
    call = sinks.spans.get_finished_spans()[-1]
    [event] = [e for e in call.events if e.name == "fallback_served"]
    assert event.attributes["fallback.source"] == "cache"
    assert event.attributes["fallback.age"] >= 0.0


async def test_rate_limit_waits_hedges_and_bulkhead_refusals_are_events(sinks: Sinks) -> None:
    from resilient.trading import ServiceRateLimiter

    limiter = ServiceRateLimiter("otel-rl", "1/second", max_wait=2.0)

    @otel.traced("otel-rl", operation="get_ticker")
    async def get_ticker() -> None:
        await limiter.acquire()

    await get_ticker()
    await get_ticker()  # waits for the next second: a rate_limited event
    span = sinks.spans.get_finished_spans()[-1]
    [event] = [e for e in span.events if e.name == "rate_limited"]
    assert event.attributes["rate_limit.wait"] > 0

    @resilient.bulkhead("otel-bh", max_concurrent=1, max_queue=0)
    async def hold() -> None:
        await asyncio.sleep(0.05)

    first = asyncio.ensure_future(hold())
    await asyncio.sleep(0)
    with pytest.raises(resilient.BulkheadFullError):
        await hold()
    await first
    names = {p["event.name"] for p, _ in sinks.points("resilient.strategy.events")}
    assert {"rate_limited", "bulkhead_rejected"} <= names


async def test_durations_are_opt_in() -> None:
    quiet = Sinks(durations=False)
    try:

        @otel.instrument("dur", use_retry=False, use_breaker=False)
        async def read() -> int:
            return 1

        await read()
        assert quiet.points("resilient.pipeline.duration") == []
    finally:
        otel.uninstall()
    timed = Sinks(durations=True)
    try:
        await read()
        [(attrs, point)] = timed.points("resilient.pipeline.duration")
        assert attrs["service"] == "dur" and point.count == 1 and point.sum > 0
        assert len(timed.points("resilient.attempt.duration")) == 1
    finally:
        otel.uninstall()


def test_success_path_allocates_nothing_with_telemetry_installed(sinks: Sinks) -> None:
    """Telemetry listens to failure events only: a plain decorated call that succeeds
    allocates no more with it installed than without (a handful of blocks over 20,000 calls,
    from the interpreter's own caches, not per call)."""

    @resilient.resilient("alloc", value=0)
    def read() -> int:
        return 1

    def blocks_over(calls: int) -> int:
        for _ in range(1000):
            read()
        before = sys.getallocatedblocks()
        for _ in range(calls):
            read()
        return sys.getallocatedblocks() - before

    assert otel.installed() is not None
    assert blocks_over(20_000) < 20
    otel.uninstall()
    assert blocks_over(20_000) < 20
