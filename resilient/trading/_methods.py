"""Which public methods a proxy wraps, and what kind of call each one is.

A method's kind comes from, in order: the caller's declaration (``kinds=`` or
``services.<name>.methods.<method>.kind``), the vocabulary table of the common broker SDKs,
then name patterns (both in :mod:`resilient._core.kinds`). A broker method that none of these
recognises is *undeclared*: the proxy guards it like an order for the trading switches until it
is declared.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from resilient._core.kinds import SDK_VOCABULARY, guess_kind, snake_case

__all__ = ["SDK_VOCABULARY", "guess_kind", "public_methods", "snake_case"]


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
        if not callable(value) or inspect.isclass(value):
            continue
        # An event object (ib_insync's ``orderStatusEvent``, subscribed to with ``+=``) is
        # state, read from the wrapped object untouched; any other callable object may place
        # an order and is wrapped like a method.
        if not inspect.isroutine(value) and hasattr(type(value), "__iadd__"):
            continue
        found[name] = value
    return found
