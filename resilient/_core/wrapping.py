"""Decorator plumbing shared by the policies, and ``resilient()``, their recommended stack.

``resilient(name, ...)`` is ``fallback(retry(breaker(timeout(fn))))`` with each layer's options
passed as keyword arguments.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from resilient._policies.breaker import ExcludeSpec
    from resilient._policies.retry import Idempotent, RetryOn

__all__ = [
    "UNSET",
    "Layer",
    "check_target",
    "exception_matcher",
    "is_async_callable",
    "policy_name",
    "resilient",
    "wrap",
]

F = TypeVar("F", bound=Callable[..., Any])


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()
"""Marks an argument that was not given (``None`` can be a meaningful value)."""


def is_async_callable(call: object) -> bool:
    """Whether calling ``call`` returns a coroutine: ``async def`` functions and methods,
    partials of them, and objects with an ``async def __call__``."""
    while isinstance(call, functools.partial):
        call = call.func
    if inspect.isclass(call):
        return False
    if inspect.iscoroutinefunction(call):
        return True
    dunder = getattr(call, "__call__", None)  # noqa: B004 - the method itself is inspected
    return inspect.iscoroutinefunction(dunder)


def check_target(fn: object, decorator: str) -> None:
    """Refuse, at decoration, a target a policy cannot wrap: a ``classmethod``,
    ``staticmethod`` or ``property`` object (the policy decorator was written above it) or
    anything not callable."""
    if isinstance(fn, classmethod | staticmethod | property):
        kind = type(fn).__name__
        raise TypeError(
            f"{decorator} was written above @{kind}: it would wrap the {kind} object, not the "
            f"function. Put @{kind} above it:\n    @{kind}\n    {decorator}\n    def ..."
        )
    if not callable(fn):
        raise TypeError(f"{decorator} decorates a function or another callable, got {fn!r}")


def policy_name(fn: object) -> str:
    """A readable default name for a decorated callable (module-qualified)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{qualname}"


def exception_matcher(spec: object, what: str) -> Callable[[BaseException], bool] | None:
    """A predicate from an exception type, a tuple/list of types and predicates, or a
    predicate; ``None`` for an empty spec. Bad input fails at decoration with a clear error."""
    if spec is None or spec == () or spec == []:
        return None
    items = list(spec) if isinstance(spec, tuple | list | set | frozenset) else [spec]
    types: list[type[BaseException]] = []
    predicates: list[Callable[[BaseException], bool]] = []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            types.append(item)
        elif callable(item) and not isinstance(item, type):
            predicates.append(item)
        else:
            raise TypeError(
                f"{what} takes exception types or predicates (exc -> bool), got {item!r}"
            )
    type_tuple = tuple(types)
    if not predicates:
        return lambda exc: isinstance(exc, type_tuple)
    preds = tuple(predicates)

    def match(exc: BaseException) -> bool:
        return isinstance(exc, type_tuple) or any(p(exc) for p in preds)

    return match


class Layer:
    """Per-decoration facts read on failure paths only."""

    __slots__ = ("kind", "name", "outermost")

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        self.outermost = True

    def __repr__(self) -> str:
        return f"Layer({self.kind!r}, {self.name!r}, outermost={self.outermost})"


def wrap(wrapper: F, fn: Callable[..., Any], layer: Layer, **attrs: Any) -> F:
    """Copy ``fn``'s metadata onto ``wrapper``, mark an inner policy layer as not outermost
    and attach ``layer`` and ``attrs`` (``breaker``, ``policy_name``…)."""
    inner: Layer | None = getattr(fn, "__resilient_layer__", None)
    if inner is not None:
        inner.outermost = False
    with contextlib.suppress(AttributeError, TypeError):  # exotic callables: copy what can be
        functools.update_wrapper(wrapper, fn)
    wrapper.__resilient_layer__ = layer  # type: ignore[attr-defined]
    wrapper.policy_name = layer.name  # type: ignore[attr-defined]
    for key, value in attrs.items():
        setattr(wrapper, key, value)
    return wrapper


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
    from resilient._policies.breaker import breaker as _breaker
    from resilient._policies.fallback import fallback as _fallback
    from resilient._policies.retry import retry as _retry
    from resilient._policies.timeout import timeout as _timeout

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
