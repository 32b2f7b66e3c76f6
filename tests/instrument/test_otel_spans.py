"""OpenTelemetry spans of synchronous calls, failed calls, and nothing before ``install`` or
after ``uninstall`` (checked with the SDK's in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from resilient import otel, retry


class _Sinks:
    def __init__(self, *, durations: bool) -> None:
        self.reader = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = otel.install(
            MeterProvider(metric_readers=[self.reader]), tracer_provider, durations=durations
        )

    def histogram(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        data = self.reader.get_metrics_data()
        found = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == metric:
                        found.extend((dict(p.attributes), p) for p in m.data.data_points)
        return found


@pytest.fixture
def sinks() -> Iterator[_Sinks]:
    made = _Sinks(durations=True)
    try:
        yield made
    finally:
        otel.uninstall()


def test_sync_call_span_with_attempt_children(sinks: _Sinks) -> None:
    failures = 1

    @otel.traced("prices", operation="load")
    @retry(max_attempts=3, initial_delay=0, max_delay=0, budget=False)
    @otel.attempts("prices")
    def load_prices() -> list[float]:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("reset")
        return [1.0, 2.0]

    assert load_prices() == [1.0, 2.0]
    assert load_prices.__name__ == "load_prices"
    spans = sinks.spans.get_finished_spans()
    [call] = [s for s in spans if s.name == "load"]
    tries = sorted(
        (s for s in spans if s.name == "load_prices attempt"), key=lambda s: s.start_time or 0
    )
    assert [s.status.status_code.name for s in tries] == ["ERROR", "UNSET"]
    assert [s.attributes.get("http.request.resend_count") for s in tries] == [None, 1]
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in tries)
    assert call.attributes["service"] == "prices" and call.attributes["operation"] == "load"
    assert call.status.status_code.name == "UNSET"
    [(attrs, point)] = sinks.histogram("resilient.pipeline.duration")
    assert attrs["service"] == "prices" and point.count == 1
    attempt_points = {
        a["error.type"]: p.count for a, p in sinks.histogram("resilient.attempt.duration")
    }
    assert attempt_points["ConnectionError"] == 1
    assert sum(attempt_points.values()) == 2


def test_sync_failure_marks_the_call_span(sinks: _Sinks) -> None:
    @otel.traced("orders")
    @otel.attempts()
    def place() -> None:
        raise ValueError("rejected")

    with pytest.raises(ValueError):
        place()
    spans = sinks.spans.get_finished_spans()
    [call] = [s for s in spans if s.name == "place"]
    [attempt] = [s for s in spans if s.name == "place attempt"]
    assert call.status.status_code.name == "ERROR"
    assert call.attributes["error.type"] == "ValueError"
    assert attempt.status.status_code.name == "ERROR"
    [(attrs, _)] = sinks.histogram("resilient.pipeline.duration")
    assert attrs["error.type"] == "ValueError"


async def test_async_failure_marks_both_spans(sinks: _Sinks) -> None:
    @otel.traced("feed")
    @otel.attempts("feed")
    async def read() -> int:
        raise TimeoutError("slow")

    with pytest.raises(TimeoutError):
        await read()
    spans = sinks.spans.get_finished_spans()
    assert sorted(s.name for s in spans) == ["read", "read attempt"]
    assert all(s.status.status_code.name == "ERROR" for s in spans)
    assert all(s.attributes["error.type"] == "TimeoutError" for s in spans)


async def test_nothing_is_recorded_before_install_or_after_uninstall() -> None:
    @otel.traced("quiet")
    @otel.attempts("quiet")
    def sync_call() -> int:
        return 1

    @otel.traced("quiet")
    @otel.attempts("quiet")
    async def async_call() -> int:
        return 2

    assert otel.installed() is None
    assert sync_call() == 1 and await async_call() == 2
    sinks = _Sinks(durations=False)
    assert otel.installed() is sinks.telemetry
    otel.uninstall()
    otel.uninstall()  # idempotent
    assert otel.installed() is None
    assert sync_call() == 1 and await async_call() == 2
    assert sinks.spans.get_finished_spans() == ()


def test_a_second_install_replaces_the_first() -> None:
    first = _Sinks(durations=False)
    second = _Sinks(durations=False)
    try:

        @otel.traced("svc")
        def call() -> None:
            return None

        call()
        assert otel.installed() is second.telemetry
        assert first.spans.get_finished_spans() == ()
        assert [s.name for s in second.spans.get_finished_spans()] == ["call"]
    finally:
        otel.uninstall()
