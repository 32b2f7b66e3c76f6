"""The Prometheus exposition of values recorded through ``resilient.metrics``: retries of
other libraries' loops, the application's own counters, stream ages and pool sources that
fail or answer nothing."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from resilient import metrics


def _lines(fragment: str) -> list[str]:
    text = metrics.generate_latest().decode()
    return [line for line in text.splitlines() if fragment in line and not line.startswith("#")]


def test_record_retry_of_another_librarys_loop() -> None:
    metrics.record_retry("ext-loop", 2, TimeoutError("slow"))
    metrics.record_retry("ext-loop", 1, None)
    metrics.record_retry("ext-loop", 1, None)
    lines = _lines('callable="ext-loop"')
    assert (
        'resilient_retries_total{callable="ext-loop",error_type="TimeoutError",retry_num="2"} 1.0'
        in lines
    )
    assert 'resilient_retries_total{callable="ext-loop",error_type="",retry_num="1"} 2.0' in lines


def test_application_counters_with_uneven_labels() -> None:
    metrics.inc("orders_sent", {"venue": "x"})
    metrics.inc("orders_sent_total", {"venue": "y", "side": "buy"}, 2)
    assert sorted(_lines("resilient_orders_sent_total")) == [
        'resilient_orders_sent_total{side="",venue="x"} 1.0',
        'resilient_orders_sent_total{side="buy",venue="y"} 2.0',
    ]


@pytest.mark.parametrize(
    ("name", "labels", "message"),
    [
        ("orders-sent", None, "invalid metric name 'orders-sent'"),
        ("orders", {"bad label": "x"}, "invalid label name 'bad label'"),
    ],
)
def test_invalid_counter_names(name: str, labels: dict[str, str] | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.inc(name, labels)


def test_stream_ages_skip_failing_and_silent_sources() -> None:
    def broken() -> float:
        raise RuntimeError("gone")

    metrics.set_stream_source("s-broken", broken)
    metrics.set_stream_source("s-none", lambda: None)
    metrics.set_stream_source("s-ok", lambda: 2.5)
    try:
        lines = _lines("resilient_stream_last_message_age_seconds")
        assert lines == ['resilient_stream_last_message_age_seconds{stream="s-ok"} 2.5']
    finally:
        for name in ("s-broken", "s-none", "s-ok"):
            metrics.set_stream_source(name, None)
    assert _lines("resilient_stream_last_message_age_seconds") == []


def test_pool_sources_as_objects_mappings_and_failures() -> None:
    class Stats:
        checked_out = 3
        size = 5
        max_size = 10

    def broken() -> Any:
        raise RuntimeError("pool closed")

    metrics.add_pool_source("p-obj", Stats)
    metrics.add_pool_source("p-map", lambda: {"in_use": 1, "size": 4, "max_size": 8})
    metrics.add_pool_source("p-broken", broken)
    try:
        pools = metrics.snapshot()["pools"]
    finally:
        for name in ("p-obj", "p-map", "p-broken"):
            metrics.add_pool_source(name, None)
    assert "p-broken" not in pools
    assert pools["p-obj"] == {"in_use": 3, "idle": 2, "max": 10, "utilization": 0.3}
    assert pools["p-map"] == {"in_use": 1, "idle": 3, "max": 8, "utilization": 0.125}
