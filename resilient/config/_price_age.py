"""``trading.max_price_age``: how old a price may be when it values an order.

A number of seconds for every price, or a table::

    [default.trading.max_price_age]
    default = 60.0                      # every price (0: no limit)
    symbols = { "*/USD" = 5.0 }         # symbol classes by glob pattern (longest match wins)
    services = { slow_feed = 300.0 }    # prices served by one service (StalePrice.service)

A symbol class beats a service, which beats the default.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["PriceAgeLimits"]

_KEYS = ("default", "symbols", "services")
_DEFAULT = 60.0


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class PriceAgeLimits:
    """The resolved ``trading.max_price_age`` (seconds; 0 means no limit)."""

    default: float = _DEFAULT
    symbols: tuple[tuple[str, float], ...] = ()  # (pattern, seconds), longest pattern first
    services: tuple[tuple[str, float], ...] = ()

    def limit_for(self, symbol: str | None, service: str | None = None) -> float | None:
        """The age limit of a price of ``symbol`` served by ``service`` (``None``: no limit)."""
        limit = self.default
        matched = False
        if symbol:
            for pattern, seconds in self.symbols:
                if fnmatchcase(symbol, pattern):
                    limit, matched = seconds, True
                    break
        if not matched and service:
            for name, seconds in self.services:
                if name == service:
                    limit = seconds
                    break
        return limit if limit > 0 else None

    @classmethod
    def parse(
        cls, key: str, value: Any, problem: Callable[[str, str, str], None] | None = None
    ) -> Any:
        """Validate a settings value (a number or a table); ``MISSING`` after a problem.

        Without ``problem``, a problem raises :class:`ValueError`.
        """

        def report(where: str, rule: str, fix: str) -> None:
            if problem is None:
                raise ValueError(f"{where} {rule}; {fix}")
            problem(where, rule, fix)

        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            seconds = _seconds(value)
            if seconds is None:
                shown = type(value).__name__
                rule = (
                    "must be ≥ 0 (seconds; 0 means no limit)"
                    if isinstance(value, int | float) and not isinstance(value, bool)
                    else f"must be a number of seconds or a table (got {shown})"
                )
                report(key, rule, f"write {key} = 60.0 or a table with default, symbols, services")
                return MISSING
            return cls(default=seconds)
        raw = {str(k).lower(): v for k, v in value.items()}
        ok = True
        for unknown in sorted(set(raw) - set(_KEYS)):
            close = difflib.get_close_matches(unknown, _KEYS, n=1)
            fix = f"did you mean {close[0]}?" if close else "use default, symbols, services"
            report(f"{key}.{unknown}", "is not a known key", fix)
            ok = False
        default = _seconds(raw.get("default", _DEFAULT))
        if default is None:
            report(f"{key}.default", "must be a number of seconds ≥ 0", "write default = 60.0")
            ok = False
        tables: dict[str, tuple[tuple[str, float], ...]] = {}
        for part in ("symbols", "services"):
            table = raw.get(part, {})
            if not isinstance(table, Mapping):
                report(f"{key}.{part}", "must be a table", f'write {part} = {{ "name" = 5.0 }}')
                ok = False
                continue
            entries: list[tuple[str, float]] = []
            for name, item in table.items():
                seconds = _seconds(item)
                if seconds is None:
                    report(
                        f"{key}.{part}.{name}",
                        "must be a number of seconds ≥ 0",
                        "write the limit in seconds, e.g. 5.0",
                    )
                    ok = False
                    continue
                entries.append((str(name), seconds))
            if part == "symbols":
                entries.sort(key=lambda e: (-len(e[0].replace("*", "")), e[0]))
            tables[part] = tuple(entries)
        if not ok or default is None:
            return MISSING
        return cls(default, tables["symbols"], tables["services"])
