"""Optional dependencies: a feature whose package is missing says which extra installs it.

A bare ``pip install resilient`` runs the decorators, health, configuration, the embedded
SQLite database, the in-process cache, the trading proxies and ``resilient demo``. The rest
needs an extra; importing or using such a feature without it raises ``ModuleNotFoundError``
with the line to run, e.g. ``pip install "resilient[redis]"``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "missing_extra", "require"]

EXTRAS: dict[str, str] = {
    "redis": "redis",
    "asyncpg": "db",
    "prometheus_client": "prometheus",
    "starlette": "http",
    "uvicorn": "http",
    "hypothesis": "testing",
    "pytest": "testing",
    "pytest_asyncio": "testing",
}
"""Top-level module → the extra that installs it."""


def missing_extra(exc: ModuleNotFoundError, feature: str) -> ModuleNotFoundError:
    """``exc`` rewritten to name the extra, when the missing module belongs to one (else
    ``exc`` itself): raise the result ``from None``."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return exc
    return ModuleNotFoundError(
        f"{feature} needs the {top!r} package, which is not installed: "
        f'pip install "resilient[{extra}]"',
        name=exc.name,
    )


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise ``ModuleNotFoundError`` naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise missing_extra(exc, feature) from None
