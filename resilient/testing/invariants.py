"""Invariant checks for tests of resilient code.

Each check takes what a :class:`~resilient.testing.FlakyService` recorded (its ``calls``) and
raises :class:`AssertionError` with a message that names the offending call when the invariant
does not hold::

    service = FlakyService(schedule, observe=lambda: get_breaker("broker").state)
    ...
    assert_no_call_while_open(service.calls)
    assert_within_policy(service.calls, max_attempts=3, max_delay=10.0)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from itertools import pairwise
from typing import Any, Final

from resilient._core.classify import is_transient, retry_after
from resilient.testing.flaky import Call

__all__ = [
    "assert_fallback_iff_failed",
    "assert_no_call_while_open",
    "assert_no_duplicate_orders",
    "assert_within_policy",
]

# Float sums of sleeps on a fake clock drift by a few ulps; this absorbs it.
_EPS: Final = 1e-6
_MISSING: Final = object()


def _state_of(observed: Any) -> str | None:
    if observed is None:
        return None
    if isinstance(observed, str):
        return observed
    if isinstance(observed, dict):
        state = observed.get("state")
        return None if state is None else str(state)
    state = getattr(observed, "state", None)
    return None if state is None else str(state)


def _exc_text(exc: BaseException | None) -> str:
    if exc is None:
        return "success"
    return type(exc).__name__


def _listing(calls: Sequence[Call], limit: int = 12) -> str:
    lines = [f"  {c!r}" for c in calls[:limit]]
    if len(calls) > limit:
        lines.append(f"  ... {len(calls) - limit} more")
    return "\n".join(lines)


def assert_no_call_while_open(
    calls: Sequence[Call],
    *,
    transitions: Iterable[tuple[float, str]] | None = None,
) -> None:
    """No call reached the function while its circuit was open.

    Args:
        calls: the recorded calls; with a service built with ``observe=`` returning the breaker
            state (a string, a mapping with ``"state"`` or an object with ``.state``), each call
            is checked against the state seen when it started.
        transitions: instead (or as well), ``(time, new_state)`` pairs on the same clock, e.g.
            collected from breaker-state hooks; a call that started strictly inside an open
            period fails the check.

    Raises:
        AssertionError: naming the first call that got through an open circuit.
        ValueError: when neither observed states nor transitions are available.
    """
    observed_any = False
    for call in calls:
        state = _state_of(call.observed)
        if state is None:
            continue
        observed_any = True
        if state == "open":
            raise AssertionError(
                f"call #{call.index} at t={call.started:g} reached the function while the "
                f"circuit was open (a breaker must reject with CircuitOpenError and never call "
                f"the function until its reset timeout has passed)\ncalls:\n{_listing(calls)}"
            )
    if transitions is None:
        if calls and not observed_any:
            raise ValueError(
                "no breaker state was recorded: build the FlakyService with "
                "observe=lambda: get_breaker(name).state, or pass transitions=[(time, state)]"
            )
        return
    ordered = sorted(transitions, key=lambda t: t[0])
    periods: list[tuple[float, float]] = []
    for i, (at, state) in enumerate(ordered):
        if state == "open":
            until = ordered[i + 1][0] if i + 1 < len(ordered) else float("inf")
            periods.append((at, until))
    for call in calls:
        for opened, until in periods:
            if opened + _EPS < call.started < until - _EPS:
                raise AssertionError(
                    f"call #{call.index} at t={call.started:g} reached the function while the "
                    f"circuit was open (opened at t={opened:g}, "
                    f"{'still open' if until == float('inf') else f'until t={until:g}'})"
                    f"\ncalls:\n{_listing(calls)}"
                )


def assert_within_policy(
    calls: Sequence[Call],
    *,
    max_attempts: int,
    max_total_time: float | None = None,
    max_delay: float | None = None,
    started_at: float | None = None,
    retry_permanent: bool = False,
    honour_retry_after: bool = True,
    jitter: float = 0.0,
) -> None:
    """The calls of ONE invocation of a retried function stayed within its retry policy.

    Checks that: at most ``max_attempts`` calls were made; nothing was called after a success;
    a permanent error (validation, authentication, broker rejection: not
    :func:`resilient.errors.is_transient`) was not retried unless ``retry_permanent``; the wait
    after a rate-limited call was at least its Retry-After; no wait exceeded ``max_delay``
    (+ ``jitter``, or the Retry-After when longer); and the whole invocation, from ``started_at``
    (default: the first call) to the end of the last call, took at most ``max_total_time``.

    Raises:
        AssertionError: naming the broken rule and the calls.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    if len(calls) > max_attempts:
        raise AssertionError(
            f"{len(calls)} attempts were made but the policy allows at most {max_attempts} "
            f"(max_attempts counts every call, the first included)\ncalls:\n{_listing(calls)}"
        )
    for previous, call in pairwise(calls):
        exc = previous.exception
        if exc is None:
            raise AssertionError(
                f"call #{call.index} was made although call #{previous.index} had succeeded"
                f"\ncalls:\n{_listing(calls)}"
            )
        if not retry_permanent and not is_transient(exc):
            raise AssertionError(
                f"call #{previous.index} failed with a permanent error ({_exc_text(exc)}: "
                f"{exc}) but was retried by call #{call.index}\ncalls:\n{_listing(calls)}"
            )
        if previous.ended is None:
            continue
        wait = call.started - previous.ended
        asked = retry_after(exc)
        if honour_retry_after and asked is not None and wait + _EPS < asked:
            raise AssertionError(
                f"call #{call.index} came {wait:g}s after call #{previous.index}, which was "
                f"rate limited with Retry-After {asked:g}s\ncalls:\n{_listing(calls)}"
            )
        if max_delay is not None:
            limit = max(max_delay + jitter, asked or 0.0)
            if wait > limit + _EPS:
                raise AssertionError(
                    f"call #{call.index} waited {wait:g}s after call #{previous.index}, more "
                    f"than the policy's max_delay {max_delay:g}s"
                    f"{f' + jitter {jitter:g}s' if jitter else ''}\ncalls:\n{_listing(calls)}"
                )
    if max_total_time is not None and calls:
        begin = calls[0].started if started_at is None else started_at
        last = calls[-1]
        end = last.ended if last.ended is not None else last.started
        total = end - begin
        if total > max_total_time + _EPS:
            raise AssertionError(
                f"the invocation took {total:g}s (from t={begin:g} to t={end:g}), more than the "
                f"policy's {max_total_time:g}s\ncalls:\n{_listing(calls)}"
            )


def assert_fallback_iff_failed(
    result: Any,
    calls: Sequence[Call],
    *,
    fallback: Any = _MISSING,
    is_fallback: Callable[[Any], bool] | None = None,
    transform: Callable[[Any], Any] | None = None,
) -> None:
    """A fallback was served exactly when ONE invocation's call failed.

    The invocation failed when its last recorded call raised, or when no call reached the
    function at all (an open circuit). Then ``result`` must be the fallback; otherwise it must be
    what the last call returned. Give the fallback as ``fallback=`` (compared with ``==``) or as a
    predicate ``is_fallback=`` (e.g. ``lambda r: isinstance(r, StalePrice)``). When the code
    under test turns the recorded call's result into its own, ``transform`` does the same (e.g.
    ``lambda account: account["buying_power"]``).

    Raises:
        AssertionError: the fallback was served on success, or not served on failure.
        ValueError: the fallback cannot be told apart from the function's real result.
    """
    if (fallback is _MISSING) == (is_fallback is None):
        raise ValueError("give exactly one of fallback= (a value) or is_fallback= (a predicate)")
    check: Callable[[Any], bool] = (
        is_fallback if is_fallback is not None else (lambda r: bool(r == fallback))
    )
    served = check(result)
    last = calls[-1] if calls else None
    if last is None or last.exception is not None:
        if not served:
            why = (
                "no call reached the function"
                if last is None
                else f"call #{last.index} failed with {_exc_text(last.exception)}"
                f" after {len(calls)} attempt(s)"
            )
            raise AssertionError(
                f"the invocation failed ({why}) but the caller got {result!r}, not the fallback"
                f"\ncalls:\n{_listing(calls)}"
            )
        return
    real = last.result if transform is None else transform(last.result)
    if check(real):
        raise ValueError(
            f"the function's own result {real!r} looks like the fallback; choose a "
            "fallback value (or predicate) that real results never match"
        )
    if served:
        raise AssertionError(
            f"call #{last.index} succeeded with {real!r} but the caller was served the "
            f"fallback {result!r}\ncalls:\n{_listing(calls)}"
        )
    if result != real:
        raise AssertionError(
            f"call #{last.index} succeeded with {real!r} but the caller got {result!r}"
        )


def assert_no_duplicate_orders(
    records: Iterable[Any],
    *,
    intent: Callable[[Any], Hashable],
) -> None:
    """No trading intent was executed more than once.

    Args:
        records: the orders the broker received — :class:`Call` objects of a flaky broker (only
            calls that reached the broker count: a refused connection or a 429 did not place
            anything), or the broker's own order records (each counts).
        intent: the key of one intent, e.g. ``lambda c: c.kwargs["client_order_id"]`` or a
            tuple of (symbol, side, quantity, strategy tick).

    Raises:
        AssertionError: listing every execution of the first duplicated intent.
    """
    seen: dict[Hashable, list[Any]] = {}
    for record in records:
        if isinstance(record, Call) and not record.reached:
            continue
        seen.setdefault(intent(record), []).append(record)
    for key, executed in seen.items():
        if len(executed) > 1:
            shown = "\n".join(f"  {r!r}" for r in executed)
            raise AssertionError(
                f"intent {key!r} was executed {len(executed)} times (a retry must not resend an "
                f"order unless it carries an idempotency key or the failure proves it was never "
                f"sent):\n{shown}"
            )
