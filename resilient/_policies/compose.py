"""``resilient()``: the recommended stack of policies in one decorator.

``resilient(name, ...)`` is ``fallback(retry(breaker(timeout(fn))))`` with each layer's options
passed as keyword arguments. The only module that composes policies (no policy imports
another): it also gives hedges the retry budgets, so that hedges and retries of one name share
one budget.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from resilient._core.wrapping import UNSET, check_target
from resilient._policies import hedge as _hedge
from resilient._policies.breaker import ExcludeSpec
from resilient._policies.breaker import breaker as _breaker
from resilient._policies.fallback import fallback as _fallback
from resilient._policies.retry import Idempotent, RetryOn, get_retry_budget
from resilient._policies.retry import retry as _retry
from resilient._policies.timeout import timeout as _timeout

__all__ = ["resilient"]

F = TypeVar("F", bound=Callable[..., Any])

_hedge.use_budgets(get_retry_budget)


def resilient(
    name: str,
    *,
    timeout: float | timedelta | None = None,
    # breaker
    failure_threshold: int | None = None,
    reset_timeout: float | timedelta | None = None,
    half_open_max_calls: int | None = None,
    success_threshold: int | None = None,
    exclude: ExcludeSpec = (),
    failure_rate_threshold: float | None = None,
    slow_call_duration: float | timedelta | None = None,
    slow_call_rate_threshold: float | None = None,
    window_size: float | None = None,
    window_type: str = "count",
    minimum_calls: int | None = None,
    shared: bool | None = None,
    # retry
    max_attempts: int | None = None,
    initial_delay: float | timedelta | None = None,
    max_delay: float | timedelta | None = None,
    jitter: bool = True,
    retry_on: RetryOn | None = None,
    idempotent: Idempotent = True,
    deadline: float | timedelta | None = None,
    budget: bool = True,
    # fallback
    value: Any = UNSET,
    func: Callable[..., Any] | None = None,
    cache: bool = False,
    on: Any = Exception,
    cache_ttl: float | timedelta | None = None,
    # switches for whole layers
    use_breaker: bool = True,
    use_retry: bool = True,
) -> Callable[[F], F]:
    """The recommended stack, ``fallback(retry(breaker(timeout(fn))))``, in one decorator.

    Args:
        name: the service name; names the breaker (shared by every function using it), the
            retry budget, the fallback and the health component.
        timeout: per-attempt timeout in seconds (``None``: no timeout layer).
        value / func / cache / on / cache_ttl: the fallback (no fallback layer when none
            of ``value``, ``func`` or ``cache`` is given).
        use_breaker / use_retry: leave a layer out entirely.
        Other keyword arguments go to :func:`~resilient.breaker` and :func:`~resilient.retry`.
    """
    layers: list[Callable[[Any], Any]] = []
    if timeout is not None:
        layers.append(_timeout(timeout, name=name))
    if use_breaker:
        layers.append(
            _breaker(
                name,
                failure_threshold=failure_threshold,
                reset_timeout=reset_timeout,
                half_open_max_calls=half_open_max_calls,
                success_threshold=success_threshold,
                exclude=exclude,
                failure_rate_threshold=failure_rate_threshold,
                slow_call_duration=slow_call_duration,
                slow_call_rate_threshold=slow_call_rate_threshold,
                window_size=window_size,
                window_type=window_type,
                minimum_calls=minimum_calls,
                shared=shared,
            )
        )
    if use_retry:
        layers.append(
            _retry(
                max_attempts=max_attempts,
                initial_delay=initial_delay,
                max_delay=max_delay,
                jitter=jitter,
                retry_on=retry_on,
                idempotent=idempotent,
                deadline=deadline,
                budget=budget,
                name=name,
            )
        )
    if value is not UNSET or func is not None or cache:
        layers.append(
            _fallback(value=value, func=func, cache=cache, on=on, name=name, cache_ttl=cache_ttl)
        )

    def decorate(fn: F) -> F:
        check_target(fn, f"@resilient({name!r})")
        wrapped: Any = fn
        for layer in layers:
            wrapped = layer(wrapped)
        return wrapped  # type: ignore[no-any-return]

    return decorate
