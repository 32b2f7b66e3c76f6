"""Which public methods a proxy wraps, and what kind of call each one is."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any

__all__ = ["guess_kind", "is_async", "public_methods"]

_ORDER = re.compile(
    r"^(place|submit|create|send|new|replace|modify|amend|update|edit)_?\w*order"
    r"|^(buy|sell|short|cover|order|place|submit|trade)(_|$)"
    r"|^(close|liquidate|flatten)_?\w*position"
)
_CANCEL = re.compile(r"^cancel")
_READ = re.compile(
    r"^(get|list|fetch|read|load|query|search|find|lookup|describe|is|has|check|stream|"
    r"retrieve|download|history|latest|current|quote|quotes|bars?|trades?|price|prices|"
    r"account|positions?|snapshot|snapshots|calendar|clock|assets?|orders?)(_|$)"
)


def guess_kind(name: str, *, default: str) -> str:
    """``"order"``, ``"cancel"``, ``"read"`` or ``default``, from a method's name."""
    lowered = name.lower()
    if _CANCEL.search(lowered):
        return "cancel"
    if _ORDER.search(lowered):
        return "order"
    if _READ.search(lowered):
        return "read"
    return default


def public_methods(obj: object) -> dict[str, Callable[..., Any]]:
    """Every public bound method of ``obj`` (names not starting with ``_``)."""
    found: dict[str, Callable[..., Any]] = {}
    for name in dir(obj):
        if name.startswith("_"):
            continue
        try:
            static = inspect.getattr_static(obj, name)
        except AttributeError:
            continue
        if isinstance(static, property | functools.cached_property):
            continue  # properties are state, read through __getattr__ each time
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        if callable(value) and not inspect.isclass(value):
            found[name] = value
    return found


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` returns an awaitable (``async def``, partials, async __call__)."""
    if inspect.isclass(fn):
        return False
    if inspect.iscoroutinefunction(fn):
        return True
    partial_call = getattr(fn, "func", None)
    if partial_call is not None and isinstance(fn, functools.partial):
        return is_async(partial_call)
    dunder_call = getattr(fn, "__call__", None)  # noqa: B004 - async __call__ objects
    return inspect.iscoroutinefunction(dunder_call)
