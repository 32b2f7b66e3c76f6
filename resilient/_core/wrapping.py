"""Decorator plumbing shared by the policies: the sync/async test, target checks, default
names, exception matchers and the wrapper's metadata (:class:`Layer`)."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable
from typing import Any, Final, TypeVar

__all__ = [
    "UNSET",
    "Layer",
    "check_target",
    "exception_matcher",
    "is_async_callable",
    "policy_name",
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
