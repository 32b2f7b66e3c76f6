"""What backends publish for the health layer to pull.

A backend started without a health registry of its own (a standalone ``Database``) publishes
its health check here, and every started pool its usage reader; the health package reads both.
Neither imports the other: the backend adds its source when it is imported, so while it is not
imported (and its driver not loaded) there is nothing to read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "CheckEntry",
    "add_check_source",
    "add_pool_source",
    "published_checks",
    "published_pools",
]

CheckEntry: TypeAlias = tuple[Callable[[], Any], bool, float | None]
"""(check, critical, timeout) of one published component."""

_check_sources: list[Callable[[], Mapping[str, CheckEntry]]] = []
_pool_sources: list[Callable[[], Mapping[str, Callable[[], Any]]]] = []


def add_check_source(source: Callable[[], Mapping[str, CheckEntry]]) -> None:
    """Publish ``source()``'s components (``name -> (check, critical, timeout)``)."""
    if source not in _check_sources:
        _check_sources.append(source)


def add_pool_source(source: Callable[[], Mapping[str, Callable[[], Any]]]) -> None:
    """Publish ``source()``'s pool-usage readers (``name -> reader``)."""
    if source not in _pool_sources:
        _pool_sources.append(source)


def published_checks() -> dict[str, CheckEntry]:
    """Every published component, by name."""
    out: dict[str, CheckEntry] = {}
    for source in list(_check_sources):
        out.update(source())
    return out


def published_pools() -> dict[str, Callable[[], Any]]:
    """Every published pool-usage reader, by name."""
    out: dict[str, Callable[[], Any]] = {}
    for source in list(_pool_sources):
        out.update(source())
    return out
