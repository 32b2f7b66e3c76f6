"""Hypothesis strategies for fault schedules.

``fault_schedules()`` draws sequences of outcomes for a :class:`~resilient.testing.FlakyService`:
successes, exceptions of every error category (connection refused/reset, read timeouts, HTTP
503/429/401/403/400/422, broker rejections, ``ValueError``), latency, hangs and rate limits with a
Retry-After. Success is the simplest outcome and the shortest schedule the simplest schedule, so a
failing test shrinks to the fewest, plainest faults that still break it::

    @given(schedule=fault_schedules(max_size=8))
    def test_price_feed_survives(schedule):
        service = FlakyService(schedule)
        ...
"""

from __future__ import annotations

from collections.abc import Iterable

from resilient._core.extras import missing_extra

try:
    from hypothesis import strategies as st
except ModuleNotFoundError as _exc:
    raise missing_extra(_exc, "resilient.testing.strategies") from None

from resilient.testing.flaky import (
    FAULT_KINDS,
    Fault,
    FaultSchedule,
    Hang,
    Latency,
    Outcome,
    RateLimited,
    Success,
)

__all__ = [
    "PERMANENT_KINDS",
    "TRANSIENT_KINDS",
    "fault_schedules",
    "faults",
    "outcomes",
    "permanent_faults",
    "transient_faults",
]

#: Faults a retry should try again: the request failed on the way or the service is down.
TRANSIENT_KINDS: tuple[str, ...] = (
    "connection_refused",
    "connection_reset",
    "timeout",
    "http_503",
    "http_500",
    "database",
)
#: Faults a retry must not repeat: the service understood the request and said no.
PERMANENT_KINDS: tuple[str, ...] = (
    "http_401",
    "http_403",
    "http_400",
    "http_422",
    "http_404",
    "broker_rejection",
    "value_error",
    "internal",
)


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(kinds)
    unknown = [k for k in chosen if k not in FAULT_KINDS]
    if unknown:
        raise ValueError(
            f"unknown fault kind(s) {', '.join(map(repr, unknown))}; "
            f"use some of: {', '.join(FAULT_KINDS)}"
        )
    if not chosen:
        raise ValueError("kinds is empty; give at least one fault kind or leave it unset")
    return chosen


def _seconds(max_value: float) -> st.SearchStrategy[float]:
    # Quarter seconds: readable failing examples, and shrinking lands on round numbers.
    steps = max(0, int(max_value * 4))
    return st.integers(min_value=0, max_value=steps).map(lambda q: q / 4)


def faults(kinds: Iterable[str] | None = None) -> st.SearchStrategy[Fault]:
    """Single faults, of the given kinds (default: every kind in ``FAULT_KINDS``)."""
    chosen = FAULT_KINDS if kinds is None else _check_kinds(kinds)
    return st.sampled_from(chosen).map(Fault)


def transient_faults() -> st.SearchStrategy[Fault]:
    """Faults a retry should recover from (network, timeout, 5xx, a locked database)."""
    return faults(TRANSIENT_KINDS)


def permanent_faults() -> st.SearchStrategy[Fault]:
    """Faults that must not be retried (authentication, validation, missing data, broker
    rejection, a malformed answer)."""
    return faults(PERMANENT_KINDS)


def outcomes(
    *,
    kinds: Iterable[str] | None = None,
    success: bool = True,
    latency: bool = True,
    hang: bool = True,
    rate_limit: bool = True,
    max_latency: float = 5.0,
    max_retry_after: float = 30.0,
    hang_seconds: float = 3600.0,
) -> st.SearchStrategy[Outcome]:
    """Single outcomes. Simplest first: success, then plain faults, then timed outcomes.

    Args:
        kinds: fault kinds to draw from (default: all of ``FAULT_KINDS``); ``()`` for none.
        success: include plain successes.
        latency: include slow answers (``Latency``), successful or not.
        hang: include hangs (no answer for ``hang_seconds``, then a read timeout).
        rate_limit: include HTTP 429 with a Retry-After up to ``max_retry_after`` seconds.
    """
    chosen = FAULT_KINDS if kinds is None else tuple(kinds)
    if chosen:
        _check_kinds(chosen)
    parts: list[st.SearchStrategy[Outcome]] = []
    if success:
        parts.append(st.just(Success()))
    if chosen:
        parts.append(st.sampled_from(chosen).map(Fault))
    if rate_limit:
        # header=True (the HTTP form) shrinks first; the attribute form is the alternative
        header = st.booleans().map(lambda b: not b)
        parts.append(st.builds(RateLimited, _seconds(max_retry_after), header))
    if latency:
        ends: list[st.SearchStrategy[Success | Fault | RateLimited]] = [st.just(Success())]
        if chosen:
            ends.append(st.sampled_from(chosen).map(Fault))
        parts.append(st.builds(Latency, _seconds(max_latency), st.one_of(ends)))
    if hang:
        parts.append(st.just(Hang(hang_seconds)))
    if not parts:
        raise ValueError("outcomes() with everything switched off has nothing to draw")
    return st.one_of(parts)


def fault_schedules(
    *,
    min_size: int = 0,
    max_size: int = 20,
    kinds: Iterable[str] | None = None,
    success: bool = True,
    latency: bool = True,
    hang: bool = True,
    rate_limit: bool = True,
    max_latency: float = 5.0,
    max_retry_after: float = 30.0,
    hang_seconds: float = 3600.0,
) -> st.SearchStrategy[FaultSchedule]:
    """Schedules of ``min_size`` to ``max_size`` outcomes for a :class:`FlakyService`.

    Shrinks toward shorter schedules, successes and plain faults, so the falsifying example is the
    smallest story of failures that breaks the property. The keyword arguments are those of
    :func:`outcomes`.
    """
    if min_size < 0 or max_size < min_size:
        raise ValueError(f"need 0 <= min_size <= max_size, got {min_size} and {max_size}")
    element = outcomes(
        kinds=kinds,
        success=success,
        latency=latency,
        hang=hang,
        rate_limit=rate_limit,
        max_latency=max_latency,
        max_retry_after=max_retry_after,
        hang_seconds=hang_seconds,
    )
    return st.lists(element, min_size=min_size, max_size=max_size).map(FaultSchedule)
