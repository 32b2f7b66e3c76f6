"""Prometheus metrics (extra ``prometheus``) with stable names.

The names follow Resilience4j's micrometer names and stamina's retry counter, under the
``resilient_`` prefix:

==========================================================  =====================================
``resilient_circuitbreaker_state{name,state}``              gauge, 1 for the current state
``resilient_circuitbreaker_calls_total{name,kind}``         kind: successful, failed, not_permitted
``resilient_circuitbreaker_transitions_total{name,state}``  state entered
``resilient_retries_total{callable,retry_num,error_type}``  one per retry (stamina's counter)
``resilient_fallbacks_total{name,source}``                  source: value, func, cache
``resilient_errors_total{category}``                        errors counted by the error tracker
``resilient_health_status{component,status}``               gauge, 1 for the latest status
``resilient_health_check_latency_seconds{component}``       latest check latency
``resilient_pool_connections{pool,state}``                  state: in_use, idle, max
``resilient_pool_utilization_ratio{pool}``                  in_use / max, 0..1
``resilient_ratelimit_usage_ratio{name}``                   used / limit in the current window
``resilient_stream_last_message_age_seconds{stream}``       seconds since a stream's last message
``resilient_stream_reconnects_total{reason,stream}``        reconnections of a stream, by reason
``resilient_bulkhead_calls_total{name,kind}``               kind: admitted, rejected
``resilient_bulkhead_concurrent_calls{name}``               calls holding a slot now
``resilient_bulkhead_queue_depth{name}``                    calls waiting for a slot now
``resilient_bulkhead_max_concurrent_calls{name}``           the limit
``resilient_<name>_total{...}``                             counters added with :func:`inc`
==========================================================  =====================================

Breaker and health values are read when Prometheus scrapes (nothing is paid per call); the
other counters are fed on failure paths only. The recording functions below work without
``prometheus_client`` installed and never raise.
"""

from __future__ import annotations

import re as _re
import threading as _threading
from collections import Counter as _Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from resilient._core import events as _hooks
from resilient._core.events import PolicyEvent as _PolicyEvent
from resilient._core.extras import require as _require
from resilient._instrument.tracker import ErrorRecord as _ErrorRecord
from resilient._policies.breaker import breakers as _breaker_registry
from resilient._policies.bulkhead import bulkheads as _bulkhead_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = [
    "add_pool_provider",
    "add_pool_source",
    "collector_registry",
    "generate_latest",
    "inc",
    "on_breaker_state",
    "on_error",
    "on_fallback_served",
    "record_fallback",
    "record_retry",
    "record_transition",
    "register_default",
    "reset",
    "set_health_source",
    "set_pool_usage",
    "set_rate_limit_usage",
    "set_stream_source",
    "snapshot",
]

_PREFIX = "resilient"
_STATES = ("closed", "open", "half-open")
_NAME = _re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

_lock = _threading.Lock()
_fallbacks: _Counter[tuple[str, str]] = _Counter()
_errors: _Counter[str] = _Counter()
_transitions: _Counter[tuple[str, str]] = _Counter()
_pools: dict[str, tuple[int, int, int]] = {}
_pool_sources: dict[str, Callable[[], Any]] = {}
_ratelimits: dict[str, tuple[float, float]] = {}
_custom: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
_streams: dict[str, Callable[[], float | None]] = {}  # stream -> last message age (streams)
_health_source: Callable[[], Any] | None = None
_pool_providers: list[Callable[[], Mapping[str, Callable[[], Any]]]] = []


def record_retry(name: str, attempt: int, exc: BaseException | None) -> None:
    """Count one retry of ``name`` after failed attempt ``attempt`` (stamina's labels).

    ``@retry`` counts its own retries; this is for retry loops of other libraries."""
    _hooks.count_retry(name, attempt, type(exc) if exc is not None else None)


def _retry_values() -> dict[tuple[str, str, str], int]:
    """The retry counts by (callable, retry_num, error_type)."""
    out: _Counter[tuple[str, str, str]] = _Counter()
    for (name, attempt, exc_type), n in _hooks.retry_counts().items():
        out[(name, str(attempt), exc_type.__name__ if exc_type is not None else "")] += n
    return dict(out)


def record_fallback(name: str, source: str) -> None:
    """Count one fallback served by ``name`` from ``source`` (value, func or cache)."""
    with _lock:
        _fallbacks[(name, source)] += 1


def record_transition(name: str, state: str) -> None:
    """Count one transition of breaker ``name`` into ``state``."""
    if state:
        with _lock:
            _transitions[(name, state)] += 1


def _count_error(category: str) -> None:
    with _lock:
        _errors[category] += 1


def on_error(record: _ErrorRecord) -> None:
    """Error-tracker sink: one error counted by the tracker, by category."""
    _count_error(record.category.value)


def on_fallback_served(event: _PolicyEvent) -> None:
    """Subscriber to ``fallback_served``."""
    record_fallback(event.name, event.source or "value")


def on_breaker_state(event: _PolicyEvent) -> None:
    """Subscriber to ``breaker_state``."""
    record_transition(event.name, event.new_state or "")


def set_health_source(report: Callable[[], Any] | None) -> None:
    """Read the latest health report (a ``HealthReport`` or ``None``) from ``report()`` at each
    scrape, for the ``health_*`` families (``None`` removes it; set by the health package)."""
    global _health_source
    _health_source = report


def set_pool_usage(pool: str, *, in_use: int, idle: int, max_size: int) -> None:
    """Report a connection pool's usage (push style; see :func:`add_pool_source` to pull)."""
    with _lock:
        _pools[pool] = (int(in_use), int(idle), int(max_size))


def add_pool_source(pool: str, source: Callable[[], Any] | None) -> None:
    """Read pool usage from ``source()`` at each scrape (``None`` removes it).

    ``source()`` returns an object or mapping with ``checked_out`` (or ``in_use``), ``size``
    (connections open) and ``max_size``.
    """
    with _lock:
        if source is None:
            _pool_sources.pop(pool, None)
        else:
            _pool_sources[pool] = source


def add_pool_provider(
    provider: Callable[[], Mapping[str, Callable[[], Any]]],
) -> Callable[[], None]:
    """Read, at each scrape, ``provider()``: pool names to sources as for
    :func:`add_pool_source` (idempotent; the health package adds the started databases).
    Returns a function that removes it."""
    with _lock:
        if provider not in _pool_providers:
            _pool_providers.append(provider)

    def remove() -> None:
        with _lock:
            if provider in _pool_providers:
                _pool_providers.remove(provider)

    return remove


def set_rate_limit_usage(name: str, *, used: float, limit: float) -> None:
    """Report how much of rate limit ``name`` the current window has used."""
    with _lock:
        _ratelimits[name] = (float(used), float(limit))


def set_stream_source(stream: str, age: Callable[[], float | None] | None) -> None:
    """Read stream ``stream``'s last-message age from ``age()`` at each scrape (``None``
    removes it). Reconnections are counted with ``inc("stream_reconnects", ...)``."""
    with _lock:
        if age is None:
            _streams.pop(stream, None)
        else:
            _streams[stream] = age


def inc(name: str, labels: Mapping[str, str] | None = None, amount: float = 1.0) -> None:
    """Add ``amount`` to the counter ``resilient_<name>_total{labels}``.

    Raises:
        ValueError: ``name`` or a label name is not a valid Prometheus name.
    """
    base = name.removesuffix("_total")
    if not _NAME.match(base):
        raise ValueError(f"invalid metric name {name!r}: use letters, digits and underscores")
    items = tuple(sorted((str(k), str(v)) for k, v in (labels or {}).items()))
    for key, _ in items:
        if not _NAME.match(key):
            raise ValueError(f"invalid label name {key!r} for metric {name!r}")
    with _lock:
        _custom[(base, items)] = _custom.get((base, items), 0.0) + amount


def reset() -> None:
    """Forget every recorded value (tests)."""
    with _lock:
        _hooks.reset_retry_counts()
        for store in (_fallbacks, _errors, _transitions, _custom):
            store.clear()
        _pools.clear()
        _pool_sources.clear()
        _ratelimits.clear()
        _streams.clear()


def _pool_values() -> dict[str, tuple[int, int, int]]:
    with _lock:
        values = dict(_pools)
        sources = dict(_pool_sources)
        providers = list(_pool_providers)
    for provider in providers:
        try:
            sources.update(provider())
        except Exception:  # a failing provider must not break a scrape
            continue
    for pool, source in sources.items():
        try:
            raw = source()

            def get(key: str, _raw: Any = raw) -> Any:
                if isinstance(_raw, Mapping):
                    return _raw.get(key)
                return getattr(_raw, key, None)

            in_use = get("checked_out")
            if in_use is None:
                in_use = get("in_use")
            size = get("size") or 0
            max_size = get("max_size") or 0
            values[pool] = (int(in_use or 0), max(int(size) - int(in_use or 0), 0), int(max_size))
        except Exception:  # a failing source must not break a scrape
            continue
    return values


def snapshot() -> dict[str, Any]:
    """The recorded values as plain data (also what the collector exports)."""
    pools = _pool_values()
    retries = _retry_values()
    with _lock:
        return {
            "retries": {"|".join(k): v for k, v in retries.items()},
            "fallbacks": {"|".join(k): v for k, v in _fallbacks.items()},
            "errors": dict(_errors),
            "transitions": {"|".join(k): v for k, v in _transitions.items()},
            "pools": {
                p: {"in_use": u, "idle": i, "max": m, "utilization": (u / m) if m else 0.0}
                for p, (u, i, m) in pools.items()
            },
            "rate_limits": {
                n: {"used": u, "limit": lim, "usage": (u / lim) if lim else 0.0}
                for n, (u, lim) in _ratelimits.items()
            },
            "bulkheads": {b.name: b.to_dict() for b in _bulkheads()},
        }


def _bulkheads() -> list[Any]:
    return list(_bulkhead_registry.snapshots())


def _breakers() -> list[Any]:
    try:
        return list(_breaker_registry.snapshots())
    except Exception:  # a failing snapshot must not break a scrape
        return []


def _counter(
    name: str, doc: str, labels: list[str], values: Iterable[tuple[Sequence[str], float]]
) -> Metric:
    """The counter family ``resilient_<name>`` with one sample per (label values, value)."""
    from prometheus_client.core import CounterMetricFamily

    fam = CounterMetricFamily(f"{_PREFIX}_{name}", doc, labels=labels)
    for label_values, value in values:
        fam.add_metric(list(label_values), value)
    return fam


class _Collector:
    """Builds every metric family at scrape time."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        state = GaugeMetricFamily(
            f"{_PREFIX}_circuitbreaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            labels=["name", "state"],
        )
        calls = CounterMetricFamily(
            f"{_PREFIX}_circuitbreaker_calls",
            "Calls seen by a circuit breaker by outcome (successful, failed, not_permitted).",
            labels=["name", "kind"],
        )
        for snap in _breakers():
            name = str(getattr(snap, "name", ""))
            current = str(getattr(snap, "state", ""))
            for s in _STATES:
                state.add_metric([name, s], 1.0 if s == current else 0.0)
            calls.add_metric([name, "successful"], float(getattr(snap, "success_count", 0) or 0))
            calls.add_metric([name, "failed"], float(getattr(snap, "failure_count", 0) or 0))
            calls.add_metric(
                [name, "not_permitted"], float(getattr(snap, "rejected_calls", 0) or 0)
            )
        yield state
        yield calls

        retries = _retry_values()
        with _lock:
            fallbacks = dict(_fallbacks)
            errors = dict(_errors)
            transitions = dict(_transitions)
            ratelimits = dict(_ratelimits)
            custom = dict(_custom)

        yield _counter(
            "circuitbreaker_transitions",
            "Circuit breaker state transitions by the state entered.",
            ["name", "state"],
            transitions.items(),
        )
        yield _counter(
            "retries",
            "Retries scheduled, by callable, retry number and error type.",
            ["callable", "retry_num", "error_type"],
            retries.items(),
        )
        yield _counter(
            "fallbacks",
            "Fallback answers served, by name and source (value, func, cache).",
            ["name", "source"],
            fallbacks.items(),
        )
        yield _counter(
            "errors",
            "Errors counted by the error tracker, by category.",
            ["category"],
            (((category,), v) for category, v in errors.items()),
        )

        yield from _health_families()

        conns = GaugeMetricFamily(
            f"{_PREFIX}_pool_connections",
            "Connection pool connections by state (in_use, idle, max).",
            labels=["pool", "state"],
        )
        util = GaugeMetricFamily(
            f"{_PREFIX}_pool_utilization_ratio",
            "Connections in use divided by the pool's maximum size.",
            labels=["pool"],
        )
        for pool, (in_use, idle, max_size) in _pool_values().items():
            conns.add_metric([pool, "in_use"], in_use)
            conns.add_metric([pool, "idle"], idle)
            conns.add_metric([pool, "max"], max_size)
            util.add_metric([pool], (in_use / max_size) if max_size else 0.0)
        yield conns
        yield util
        usage = GaugeMetricFamily(
            f"{_PREFIX}_ratelimit_usage_ratio",
            "Share of a rate limit used in the current window.",
            labels=["name"],
        )
        for name, (used, limit) in ratelimits.items():
            usage.add_metric([name], (used / limit) if limit else 0.0)
        yield usage
        ages = GaugeMetricFamily(
            f"{_PREFIX}_stream_last_message_age_seconds",
            "Seconds since a supervised stream's last message.",
            labels=["stream"],
        )
        with _lock:
            streams = dict(_streams)
        for stream, age in streams.items():
            try:
                value = age()
            except Exception:  # a failing source must not break a scrape
                continue
            if value is not None:
                ages.add_metric([stream], value)
        yield ages
        yield from _bulkhead_families()

        by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
        for (base, items), total in custom.items():
            by_name.setdefault(base, []).append((items, total))
        for base, series in sorted(by_name.items()):
            label_names = sorted({k for items, _ in series for k, _ in items})
            fam = CounterMetricFamily(
                f"{_PREFIX}_{base}",
                f"Counter {base} recorded by the application.",
                labels=label_names,
            )
            for items, amount in series:
                values = dict(items)
                fam.add_metric([values.get(k, "") for k in label_names], amount)
            yield fam


def _bulkhead_families() -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    snaps = _bulkheads()
    yield _counter(
        "bulkhead_calls",
        "Calls seen by a bulkhead by outcome (admitted, rejected).",
        ["name", "kind"],
        [((b.name, "admitted"), b.admitted) for b in snaps]
        + [((b.name, "rejected"), b.rejected) for b in snaps],
    )
    for metric, doc, attr in (
        ("concurrent_calls", "Calls holding a bulkhead slot now.", "active"),
        ("queue_depth", "Calls waiting for a bulkhead slot now.", "queued"),
        ("max_concurrent_calls", "The bulkhead's concurrent-call limit.", "max_concurrent"),
    ):
        fam = GaugeMetricFamily(f"{_PREFIX}_bulkhead_{metric}", doc, labels=["name"])
        for b in snaps:
            fam.add_metric([b.name], float(getattr(b, attr)))
        yield fam


def _health_families() -> Iterator[Metric]:
    from prometheus_client.core import GaugeMetricFamily

    status = GaugeMetricFamily(
        f"{_PREFIX}_health_status",
        "Component health: 1 for the latest status, 0 for the others.",
        labels=["component", "status"],
    )
    latency = GaugeMetricFamily(
        f"{_PREFIX}_health_check_latency_seconds",
        "Latency of the component's latest health check.",
        labels=["component"],
    )
    source = _health_source
    report = source() if source is not None else None
    if report is not None:
        for name, comp in report.components.items():
            for s in ("healthy", "degraded", "unhealthy"):
                status.add_metric([name, s], 1.0 if comp.status.value == s else 0.0)
            latency.add_metric([name], comp.latency)
    yield status
    yield latency


_registry: CollectorRegistry | None = None
_collector = _Collector()
_default_registered = False


def collector_registry() -> CollectorRegistry:
    """A Prometheus registry holding the package's collector (needs ``prometheus_client``)."""
    global _registry
    with _lock:
        if _registry is None:
            registry_class = _require(
                "prometheus_client", "resilient.metrics (Prometheus metrics)"
            ).CollectorRegistry

            reg = registry_class(auto_describe=False)
            reg.register(_collector)
            _registry = reg
        return _registry


def register_default() -> None:
    """Also expose the package's metrics on ``prometheus_client.REGISTRY`` (idempotent)."""
    global _default_registered
    with _lock:
        if not _default_registered:
            prometheus = _require("prometheus_client", "resilient.metrics (Prometheus metrics)")
            prometheus.REGISTRY.register(_collector)
            _default_registered = True


def generate_latest() -> bytes:
    """The Prometheus text exposition of the package's metrics."""
    prometheus = _require("prometheus_client", "resilient.metrics (Prometheus metrics)")
    return bytes(prometheus.generate_latest(collector_registry()))
